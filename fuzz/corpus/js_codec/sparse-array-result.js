// A result array claiming 2^32 - 1 elements.
function decodeUplink(input) {
  var x = [];
  x.length = 4294967295;
  return { data: { temperature: 1, x: x } };
}
