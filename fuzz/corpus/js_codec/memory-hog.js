// Allocates until something gives.
function decodeUplink(input) {
  var a = [];
  for (;;) a.push(new Array(100000).fill(1.5));
}
