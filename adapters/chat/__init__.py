"""What the two chat adapters (Discord, Telegram) share, written once.

Why: both surfaces resolve which Space a chat means, run table commands for an ``Actor``, word
outcomes and errors, show the same buttons on their cards, keep cards fresh and map delivery
results. Each adapter keeps only its transport and rendering; it passes a ``Style`` (Telegram HTML,
Discord Markdown) where words need markup.

- ``spaces.pick_space``: an explicit id, else the live one in this community, else the only one.
- ``actions``: ``run`` (a table command through ``core.commands.dispatch``), ``person`` (a queue
  position or account id), ``room_token`` (the one web-room link both bots hand out); ``ChatDesk``
  gives ``refund`` to the table.
- ``wording``: ``warn`` for errors, ``word`` for outcomes, ``tallies``, ``queue``, ``notice`` (follower
  DMs); ``Style`` hooks.
- ``buttons``: the card's buttons (one reaction set: ``core.commands.REACTIONS``) and what a press does.
- ``cards.CardKeeper``: render, compare and edit every card of a Space; ``cards.stage``/``cards.queue``:
  who a card names, with the web room's marks (co-host, muted, ``· subscriber``).
- ``delivery``: DeliveryResult shorthands.
"""
