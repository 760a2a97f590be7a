// Replaces its own entry point and a builtin: the next uplink must not see either.
function decodeUplink(input) {
  globalThis.decodeUplink = function () { return { data: { temperature: -99 } }; };
  Array.prototype.map = function () { return [-99]; };
  Math.round = function () { return -99; };
  return { errors: ["replaced the globals"] };
}
