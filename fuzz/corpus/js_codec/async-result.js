// Returns a promise, and leaves a job that never ends.
async function decodeUplink(input) {
  Promise.resolve().then(function () { for (;;) {} });
  return { data: { temperature: 1 } };
}
