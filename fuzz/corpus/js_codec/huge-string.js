// One allocation far beyond the heap limit, in native code.
function decodeUplink(input) {
  return { data: { temperature: "x".repeat(1 << 29).length } };
}
