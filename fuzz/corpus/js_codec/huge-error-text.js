// Errors and warnings of many megabytes.
function decodeUplink(input) {
  var s = "e".repeat(4 << 20);
  return { errors: [s, s], warnings: [s] };
}
