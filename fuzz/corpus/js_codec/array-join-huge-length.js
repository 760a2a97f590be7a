// Array.prototype.join over a length of 2^32 - 1 with nothing stored: a native loop of four
// billion steps (finding H1).
function decodeUplink(input) {
  var x = [];
  x.length = 4294967295;
  return { data: { temperature: x.join("-").length } };
}
