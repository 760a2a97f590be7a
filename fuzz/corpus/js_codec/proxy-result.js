// A result behind a proxy whose traps never return.
function decodeUplink(input) {
  var data = new Proxy({ temperature: 1 }, {
    ownKeys: function () { for (;;) {} },
    get: function () { for (;;) {} }
  });
  return { data: data };
}
