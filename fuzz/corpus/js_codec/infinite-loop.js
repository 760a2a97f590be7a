// A plain endless loop.
function decodeUplink(input) {
  for (;;) {}
}
