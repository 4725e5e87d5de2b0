'use strict';

// payguard example shop: a deliberately naive "legacy" backend.
// It does no input validation of its own: payguard, in front of it, does that.
// Every body is read as raw bytes (so /debug/last-request can show exactly what
// arrived) and parsed per route where needed.

const crypto = require('node:crypto');
const express = require('express');

// Payment tokens, as the provider's hosted fields or SDK hand them out in the browser: the card
// number never reaches the shop. The fake provider below resolves a token to the card it stands
// for, the way a real provider's API returns card details.
const TEST_TOKENS = {
  tok_visa: '4242424242424242',
  tok_mastercard: '5555555555554444',
  tok_chargeDeclined: '4000000000000002',
};
const DECLINED_TOKEN = 'tok_chargeDeclined';
const HOST = '127.0.0.1';
const PORT = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT);
const DEMO_USER = process.env.SHOP_USER || 'demo';
const DEMO_PASSWORD = process.env.SHOP_PASSWORD || 'demo';

const PRODUCTS = [
  { id: 'prod_tshirt', name: 'payguard T-shirt', price: 1999 },
  { id: 'prod_mug', name: 'payguard mug', price: 1250 },
  { id: 'prod_sticker', name: 'payguard sticker pack', price: 499 },
];

const orders = new Map(); // order_id -> order record
let requestCount = 0; // every request except /debug/*
let lastRequest = null; // description of the last request except /debug/*

// Logs go to stderr: stdout carries only the "listening" line.
function log(msg) {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
}

function isDebug(req) {
  return req.path === '/debug' || req.path.startsWith('/debug/');
}

function rawBody(req) {
  return Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
}

// Header names lowercased; repeated headers joined with ", " (all of them,
// unlike req.headers, which silently drops duplicates of some names).
function headersOf(req) {
  const out = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    out[name] = name in out ? `${out[name]}, ${raw[i + 1]}` : raw[i + 1];
  }
  return out;
}

function record(req) {
  if (isDebug(req)) return;
  const body = rawBody(req);
  lastRequest = {
    method: req.method,
    path: req.path,
    url: req.originalUrl,
    headers: headersOf(req),
    body_base64: body.toString('base64'),
    body_sha256: crypto.createHash('sha256').update(body).digest('hex'),
  };
}

// JSON or form body, parsed from the raw bytes. Returns undefined when unparsable.
function parseBody(req) {
  const text = rawBody(req).toString('utf8');
  const ctype = String(req.headers['content-type'] || '').toLowerCase();
  if (ctype.startsWith('application/x-www-form-urlencoded')) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// Trusts payguard: the left-most X-Forwarded-For entry is the client.
function clientIp(req) {
  const xff = req.headers['x-forwarded-for'];
  if (xff) {
    const first = String(xff).split(',')[0].trim();
    if (first) return first;
  }
  return req.socket.remoteAddress;
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.use((req, res, next) => {
  if (!isDebug(req)) requestCount += 1;
  next();
});
// Raw bytes for every body, whatever (or whether any) Content-Type was sent.
app.use(express.raw({ type: () => true, limit: '10mb' }));
app.use((req, res, next) => {
  record(req);
  next();
});

app.get('/healthz', (req, res) => {
  res.json({ ok: true });
});

app.get('/api/products', (req, res) => {
  res.json({ products: PRODUCTS });
});

app.post('/api/orders', (req, res) => {
  const body = parseBody(req);
  if (body === undefined || body === null || typeof body !== 'object') {
    return res.status(400).json({ error: 'bad_body' });
  }
  const product = PRODUCTS.find((p) => p.id === body.product_id);
  if (!product) return res.status(400).json({ error: 'unknown_product' });
  // No validation of quantity or email: that is payguard's job.
  const order = {
    order_id: `ord_${crypto.randomBytes(8).toString('hex')}`,
    product_id: product.id,
    quantity: body.quantity,
    email: body.email,
    amount: product.price * Number(body.quantity),
    status: 'pending',
    client_ip: clientIp(req),
    created_at: new Date().toISOString(),
  };
  orders.set(order.order_id, order);
  log(`order created ${order.order_id} client_ip=${order.client_ip}`);
  res.status(201).json({ order_id: order.order_id, amount: order.amount, status: order.status });
});

app.get('/api/orders/:id', (req, res) => {
  const order = orders.get(req.params.id);
  if (!order) return res.status(404).json({ error: 'not_found' });
  res.json(order);
});

app.post('/api/checkout', (req, res) => {
  const body = parseBody(req);
  const order = body && typeof body === 'object' ? orders.get(body.order_id) : undefined;
  if (!order) return res.status(404).json({ error: 'order_not_found' });
  const card = typeof body.payment_token === 'string' ? TEST_TOKENS[body.payment_token] : undefined;
  if (card === undefined) return res.status(400).json({ error: 'unknown_payment_token' });
  // Fake payment. The declined test token is declined, so that card testing can be tried
  // against the shop.
  if (body.payment_token === DECLINED_TOKEN) {
    log(`checkout ${order.order_id} declined`);
    return res.status(402).json({ error: 'card_declined', order_id: order.order_id });
  }
  // A real shop would charge the card here: every request that gets this far is one charge.
  order.charges = (order.charges || 0) + 1;
  order.status = 'paid';
  // The legacy bug payguard's card_data guard exists for: the provider's card details are kept
  // on the order as they came, full card number included, and the order page shows them.
  order.payment = { token: body.payment_token, card_number: card };
  log(`checkout ${order.order_id} paid (charge ${order.charges})`);
  res.json({ order_id: order.order_id, status: order.status, charge: order.charges });
});

app.post('/login', (req, res) => {
  const body = parseBody(req);
  const ok = body && typeof body === 'object' && body.username === DEMO_USER && body.password === DEMO_PASSWORD;
  if (!ok) return res.status(401).json({ error: 'invalid_credentials' });
  res.json({ ok: true, username: DEMO_USER });
});

app.get('/admin/orders', (req, res) => {
  res.json({ orders: [...orders.values()] });
});

// Payment-provider callback: any content type; always acknowledges.
app.post('/pay/notify', (req, res) => {
  const verified = req.headers['x-payguard-verified'];
  let outTradeNo;
  try {
    const body = JSON.parse(rawBody(req).toString('utf8'));
    if (body && typeof body === 'object') outTradeNo = body.out_trade_no;
  } catch {
    // not JSON: acknowledged, nothing marked
  }
  const order = typeof outTradeNo === 'string' ? orders.get(outTradeNo) : undefined;
  if (order) order.status = 'paid';
  log(
    `pay/notify x-payguard-verified=${verified === undefined ? '(absent)' : verified} ` +
      `out_trade_no=${order ? order.order_id : '(no matching order)'}`,
  );
  res.json({ code: 'SUCCESS' });
});

app.get('/debug/last-request', (req, res) => {
  if (!lastRequest) return res.status(404).json({ error: 'no_request_yet' });
  res.json(lastRequest);
});

app.get('/debug/requests/count', (req, res) => {
  res.json({ count: requestCount });
});

app.use((req, res) => {
  res.status(404).json({ error: 'not_found' });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  record(req); // a body the parser refused still shows up (with an empty body)
  const status = err.status || err.statusCode || 500;
  if (status === 413) return res.status(413).json({ error: 'body_too_large' });
  if (status >= 400 && status < 500) return res.status(status).json({ error: 'bad_request' });
  log(`error ${err.stack || err}`);
  res.status(500).json({ error: 'internal_error' });
});

const server = app.listen(PORT, HOST, () => {
  process.stdout.write(`shop listening on ${HOST}:${server.address().port}\n`);
});
server.on('error', (err) => {
  log(`listen failed: ${err.message}`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
  });
}
