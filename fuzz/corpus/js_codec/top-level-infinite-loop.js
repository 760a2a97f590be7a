// An endless loop while the script is evaluated, before any uplink.
while (true) {}
function decodeUplink(input) { return { data: { temperature: 1 } }; }
