// What the room page says for each error code it can meet before or outside a command's reply (a
// command's error frame carries its own message, docs/webrtc-protocol.md).
export const ERRORS = {
  "token.expired": "This join link has expired. Ask for a new one.",
  "token.bad_signature": "This join link is not genuine. Ask for a new one.",
  "token.malformed": "This join link is damaged or incomplete. Ask for a new one.",
  "token.wrong_space": "This join link is for a different Space.",
  "space.ended": "This Space has ended.",
  "space.not_live": "This Space has not started yet.",
  "space.closed": "This Space is over.",
  "ticket.required": "This Space needs a ticket.",
  "space.blocked": "The host has blocked you from their Spaces.",
  "mic.denied": "Microphone access was denied: you can listen, but others cannot hear you. Allow the microphone and rejoin to speak.",
};
