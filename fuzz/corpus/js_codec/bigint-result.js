// A result holding a BigInt far beyond a double.
function decodeUplink(input) {
  return { data: { temperature: 2n ** 100000n } };
}
