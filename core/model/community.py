"""A Community (Discord guild, Telegram chat, the web instance) and its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.eligibility import Followers, Rule

WEB_COMMUNITY_EXTERNAL_ID = "instance"


class CommunitySettings(BaseModel):
    """Everything a community admin may tune; validated so bad settings never land."""

    model_config = ConfigDict(extra="forbid")

    host_rule: Rule = Field(default_factory=Followers)
    admin_override: bool = True
    reminder_offsets_min: list[int] = Field(default_factory=lambda: [10])
    ticketing_allowed: bool = False
    ticketing_rule: Rule = Field(default_factory=lambda: Followers(min=1000))
    moderator_identities: list[str] = Field(default_factory=list)
    moderator_roles: list[str] = Field(default_factory=list)
    announce_channel: str | None = None
    stage_channel: str | None = None
    announce_role: str | None = None
    ticket_role: str | None = None  # given to ticket holders on platforms with roles (Discord)
    stage_notify: bool = True  # Discord: notify the server when the Stage goes live
    stage_category: str | None = None  # Discord: where a Stage is made for each further Space live at once
    plugins_disabled: list[str] = Field(default_factory=list)
    # Discord: a subscription tier (Super Follows) -> the role its subscribers hold while it opens the tier
    tier_roles: dict[str, str] = Field(default_factory=dict)

    @field_validator("tier_roles")
    @classmethod
    def _tier_roles(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 20:
            raise ValueError("at most 20 tier roles")
        return v

    @field_validator("reminder_offsets_min")
    @classmethod
    def _offsets(cls, v: list[int]) -> list[int]:
        if any(o < 1 or o > 7 * 24 * 60 for o in v):
            raise ValueError("reminder offsets are minutes before the start, between 1 and 10080")
        if len(v) > 5:
            raise ValueError("at most 5 reminder offsets")
        return sorted(set(v), reverse=True)


@dataclass
class Community:
    id: str
    platform: str
    external_id: str
    name: str
    created_at: datetime
    settings: CommunitySettings = field(default_factory=CommunitySettings)
