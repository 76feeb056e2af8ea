// Checks a running `scripts/cluster.sh up` cluster through its endpoints.json, as a
// client would: a team made on the first edge, a message posted there, read back on
// every other edge. Run with NODE_EXTRA_CA_CERTS set to the cluster CA:
//   NODE_EXTRA_CA_CERTS=target/cluster/ca/ca.pem node scripts/cluster-smoke.mjs target/cluster/endpoints.json
import { readFileSync } from "node:fs";

const endpoints = JSON.parse(readFileSync(process.argv[2] ?? "target/cluster/endpoints.json", "utf8"));
if (endpoints.edges.length < 2) throw new Error(`expected two edges or more: ${JSON.stringify(endpoints)}`);

async function call(edge, method, path, token, body) {
  const response = await fetch(edge.https + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${method} ${edge.https}${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

const [first, ...others] = endpoints.edges;
const domain = `smoke${Date.now().toString(36)}`;
const team = await call(first, "POST", "/v1/teams", null, {
  name: "Smoke", domain, owner: { name: "Ada", email: `ada@${domain}.example`, password: "correct horse battery" },
});
const { channel } = await call(first, "POST", "/v1/channels", team.token, { name: "general", private: false });
const { message } = await call(first, "POST", "/v1/messages", team.token, {
  channel: channel.id, text: `hello from ${first.region}`, client_msg_id: "smoke-1",
});
for (const edge of others) {
  const history = await call(edge, "GET", `/v1/channels/${channel.id}/history`, team.token);
  if (history.messages[0]?.id !== message.id) {
    throw new Error(`${edge.region} does not show the message: ${JSON.stringify(history)}`);
  }
  console.log(`cluster smoke: ${first.region} → ${edge.region} ok (seq ${message.seq})`);
}
