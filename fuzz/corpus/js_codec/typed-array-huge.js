// A typed array of a gigabyte, and a native fill over it.
function decodeUplink(input) {
  var a = new Float64Array(1 << 27);
  a.fill(1.5);
  return { data: { temperature: a.length } };
}
