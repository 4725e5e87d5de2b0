'use strict';

// Smoke test: start the shop on a free port and exercise every endpoint.
// Run with `npm test` (node --test test/).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const path = require('node:path');

let child;
let base;

function startShop() {
  return new Promise((resolve, reject) => {
    child = spawn(process.execPath, [path.join(__dirname, '..', 'server.js')], {
      env: { ...process.env, PORT: '0', SHOP_USER: '', SHOP_PASSWORD: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    const onData = (chunk) => {
      buf += chunk;
      const m = buf.match(/^shop listening on (127\.0\.0\.1:\d+)$/m);
      if (m) {
        child.stdout.off('data', onData);
        resolve(`http://${m[1]}`);
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`shop exited early with code ${code}`)));
  });
}

async function call(method, p, { body, headers } = {}) {
  const res = await fetch(base + p, { method, body, headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

const postJson = (p, obj, headers = {}) =>
  call('POST', p, { body: JSON.stringify(obj), headers: { 'content-type': 'application/json', ...headers } });

before(async () => {
  base = await startShop();
});

after(() => {
  if (child && child.exitCode === null) child.kill('SIGTERM');
});

test('GET /healthz', async () => {
  const r = await call('GET', '/healthz');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, { ok: true });
  assert.match(r.headers.get('content-type'), /^application\/json/);
});

test('GET /api/products lists 3 products with prices in cents', async () => {
  const r = await call('GET', '/api/products');
  assert.equal(r.status, 200);
  assert.equal(r.json.products.length, 3);
  for (const p of r.json.products) {
    assert.equal(typeof p.id, 'string');
    assert.equal(typeof p.name, 'string');
    assert.ok(Number.isInteger(p.price));
  }
});

test('orders, checkout, admin listing and payment callback', async () => {
  const { json: { products } } = await call('GET', '/api/products');
  const [p0, p1] = products;

  const created = await postJson(
    '/api/orders',
    { product_id: p0.id, quantity: 3, email: 'a@example.com' },
    { 'x-forwarded-for': '198.51.100.7, 10.0.0.1' },
  );
  assert.equal(created.status, 201);
  assert.match(created.json.order_id, /^ord_[A-Za-z0-9_-]+$/);
  assert.equal(created.json.amount, p0.price * 3);
  assert.equal(created.json.status, 'pending');
  const id = created.json.order_id;

  const got = await call('GET', `/api/orders/${id}`);
  assert.equal(got.status, 200);
  assert.equal(got.json.order_id, id);
  assert.equal(got.json.client_ip, '198.51.100.7');
  assert.equal(got.json.email, 'a@example.com');

  assert.equal((await call('GET', '/api/orders/ord_missing')).status, 404);
  const bad = await postJson('/api/orders', { product_id: 'nope', quantity: 1, email: 'a@example.com' });
  assert.equal(bad.status, 400);

  const paid = await postJson('/api/checkout', {
    order_id: id,
    payment_token: 'tok_visa',
  });
  assert.equal(paid.status, 200);
  assert.deepEqual(paid.json, { order_id: id, status: 'paid', charge: 1 });
  const order = (await call('GET', `/api/orders/${id}`)).json;
  assert.equal(order.status, 'paid');
  assert.equal(order.charges, 1);
  // The legacy bug payguard masks: the order page shows the full card number.
  assert.equal(order.payment.card_number, '4242424242424242');
  const declined = await postJson('/api/checkout', { order_id: id, payment_token: 'tok_chargeDeclined' });
  assert.equal(declined.status, 402);
  assert.equal((await postJson('/api/checkout', { order_id: id, payment_token: 'tok_nope' })).status, 400);

  // A second order gets paid by the provider callback (any content type).
  const second = await postJson('/api/orders', { product_id: p1.id, quantity: 1, email: 'b@example.com' });
  const id2 = second.json.order_id;
  const notify = await call('POST', '/pay/notify', {
    body: JSON.stringify({ out_trade_no: id2, amount: { total: p1.price } }),
    headers: { 'content-type': 'text/plain', 'x-payguard-verified': 'wechatpay-v3' },
  });
  assert.equal(notify.status, 200);
  assert.deepEqual(notify.json, { code: 'SUCCESS' });
  assert.equal((await call('GET', `/api/orders/${id2}`)).json.status, 'paid');

  // Non-JSON callback is still acknowledged.
  const junk = await call('POST', '/pay/notify', { body: 'a=1&b=2', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  assert.deepEqual(junk.json, { code: 'SUCCESS' });

  const all = await call('GET', '/admin/orders');
  assert.equal(all.status, 200);
  const ids = all.json.orders.map((o) => o.order_id);
  assert.ok(ids.includes(id) && ids.includes(id2));
});

test('POST /login accepts JSON and form, rejects bad credentials', async () => {
  assert.equal((await postJson('/login', { username: 'demo', password: 'demo' })).status, 200);
  assert.equal((await postJson('/login', { username: 'demo', password: 'nope' })).status, 401);
  const form = await call('POST', '/login', {
    body: 'username=demo&password=demo',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(form.status, 200);
  const badForm = await call('POST', '/login', {
    body: 'username=demo&password=x',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(badForm.status, 401);
});

test('unknown routes are 404 JSON', async () => {
  const r = await call('GET', '/no/such/thing');
  assert.equal(r.status, 404);
  assert.deepEqual(r.json, { error: 'not_found' });
});

test('/debug/last-request shows exact bytes and headers; /debug/* is not counted', async () => {
  const before = (await call('GET', '/debug/requests/count')).json.count;
  const bytes = Buffer.from([0x00, 0xff, 0x7b, 0x22, 0x0a, 0xc3, 0x28, 0x80]); // not valid UTF-8
  const r = await call('POST', '/pay/notify?x=1', {
    body: bytes,
    headers: { 'content-type': 'application/octet-stream', 'X-Custom-Thing': 'Value' },
  });
  assert.equal(r.status, 200);

  const last = (await call('GET', '/debug/last-request')).json;
  assert.equal(last.method, 'POST');
  assert.equal(last.path, '/pay/notify');
  assert.equal(last.url, '/pay/notify?x=1');
  assert.equal(last.headers['x-custom-thing'], 'Value');
  assert.equal(last.headers['content-type'], 'application/octet-stream');
  assert.equal(last.body_base64, bytes.toString('base64'));
  assert.equal(last.body_sha256, crypto.createHash('sha256').update(bytes).digest('hex'));

  // Reading /debug/* does not change the last request or the count.
  assert.equal((await call('GET', '/debug/last-request')).json.path, '/pay/notify');
  assert.equal((await call('GET', '/debug/requests/count')).json.count, before + 1);
});

test('a body without a Content-Type is still captured', async () => {
  const res = await fetch(`${base}/pay/notify`, { method: 'POST', body: new Uint8Array([1, 2, 3]) });
  assert.equal(res.status, 200);
  const last = (await call('GET', '/debug/last-request')).json;
  assert.equal(last.headers['content-type'], undefined);
  assert.equal(last.body_base64, Buffer.from([1, 2, 3]).toString('base64'));
});
