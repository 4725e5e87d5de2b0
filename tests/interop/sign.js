#!/usr/bin/env node
// Signs payment-provider callbacks with the providers' own published SDKs, for tests/interop.rs.
//
//   node sign.js <provider> <dir>
//
// Generates every key and secret now, into <dir> (private keys and secrets stay there, mode 0600;
// nothing is committed), then prints one JSON document on stdout:
//
//   { "provider": "<payguard provider name>", "vars": { ... },
//     "cases": [{ "name", "route", "method", "path", "headers": [[name, value], ...],
//                 "body_base64", "http2", "expect": { "status", "error", "forwarded" } }, ...] }
//
// Cases are meant to be sent in order (replay cases repeat an earlier request). The Rust test
// writes the rule file referencing the files in <dir> and sends every case through payguard.
//
// Where an SDK also ships the verifier, every signed case is checked against it here first
// (`sdkCheck`), so a fixture that the provider's own library would reject never reaches payguard
// as a "valid" callback, and a tampered one that the library would accept is never expected
// to be refused.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { execFileSync } = require('node:child_process');

const [provider, dir] = process.argv.slice(2);
if (!provider || !dir) {
  process.stderr.write('usage: node sign.js <provider> <dir>\n');
  process.exit(2);
}
fs.mkdirSync(dir, { recursive: true });

const NOW = Math.floor(Date.now() / 1000);
const STALE = NOW - 600; // rules use tolerance = "5m"
const FUTURE = NOW + 600;

// ---------------------------------------------------------------------------------------------
// Output helpers

const cases = [];
const vars = {};

function writePrivate(name, text) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}

function writePublic(name, text) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
}

const OK = { status: 200, error: null, forwarded: true };
const backendAnswers = (status) => ({ status, error: null, forwarded: true });
const rejected = (error) => ({ status: 401, error, forwarded: false });

/** Adds one request. `body` is a string (sent as UTF-8) or a Buffer. */
function add(name, { route, path: urlPath, headers, body, expect, http2 = false, method = 'POST' }) {
  assert.ok(!cases.some((c) => c.name === name), `duplicate case ${name}`);
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const list = Array.isArray(headers) ? headers : Object.entries(headers);
  cases.push({
    name,
    route,
    method,
    path: urlPath,
    headers: list.map(([k, v]) => [k, String(v)]),
    body_base64: bytes.toString('base64'),
    http2,
    expect,
  });
}

/** Re-sends an earlier case unchanged (optionally to another path): a replay or a retry. */
function again(name, original, { path: urlPath, route, expect, http2 } = {}) {
  const c = cases.find((x) => x.name === original);
  assert.ok(c, `no case ${original}`);
  assert.ok(!cases.some((x) => x.name === name), `duplicate case ${name}`);
  cases.push({ ...c, name, path: urlPath ?? c.path, route: route ?? c.route, http2: http2 ?? c.http2, expect });
}

/** Flips one character of a string body (same length, still valid JSON/form). */
function tamper(body, from, to) {
  assert.ok(body.includes(from), `tamper: ${from} not in body`);
  return body.replace(from, to);
}

/** The SDK's own verifier must agree with what the case claims about the signature. */
function sdkCheck(what, expected, verify) {
  let result;
  try {
    result = verify();
  } catch {
    result = false;
  }
  if (result instanceof Promise) {
    return result.then(
      (r) => assert.equal(Boolean(r), expected, `SDK verifier disagrees on ${what}`),
      () => assert.equal(false, expected, `SDK verifier disagrees on ${what}`),
    );
  }
  assert.equal(Boolean(result), expected, `SDK verifier disagrees on ${what}`);
  return undefined;
}

function rsaKeyPair() {
  return crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
}

/** PEM private key in the given form: "pkcs8" or "pkcs1". */
function privatePem(keyObject, type = 'pkcs8') {
  return keyObject.export({ type, format: 'pem' });
}

function spkiPem(keyObject) {
  return keyObject.export({ type: 'spki', format: 'pem' });
}

/**
 * A self-signed X.509 certificate for `privateKeyFile`, made by the openssl CLI (node cannot
 * issue certificates). Returns the PEM text and the serial as uppercase hex (node's spelling).
 */
function selfSignedCert(privateKeyFile, certFile, subject, serialHex) {
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-new', '-key', privateKeyFile, '-out', certFile, '-days', '2', '-subj', subject,
        '-set_serial', `0x${serialHex}`, '-sha256'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (e) {
    throw new Error(`openssl is required to make test certificates: ${e.message}`);
  }
  const pem = fs.readFileSync(certFile, 'utf8');
  const serial = new crypto.X509Certificate(pem).serialNumber.toUpperCase();
  return { pem, serial };
}

/** 20 random bytes as uppercase hex, first nibble non-zero (certificate serials as WeChat shows them). */
function randomSerialHex() {
  const b = crypto.randomBytes(20);
  b[0] = (b[0] & 0x7f) | 0x10;
  return b.toString('hex').toUpperCase();
}

// ---------------------------------------------------------------------------------------------
// Stripe: stripe.webhooks.generateTestHeaderString (stripe-node), checked with constructEvent.

function stripe() {
  const Stripe = require('stripe');
  const webhooks = Stripe.webhooks;
  const secret0 = `whsec_${crypto.randomBytes(24).toString('hex')}`;
  const secret1 = `whsec_${crypto.randomBytes(24).toString('hex')}`;
  const unknown = `whsec_${crypto.randomBytes(24).toString('hex')}`;
  writePrivate('stripe-secret-0.txt', `${secret0}\n`);
  writePrivate('stripe-secret-1.txt', `${secret1}\n`);

  // Stripe sends pretty-printed JSON; whitespace and non-ASCII must survive byte for byte.
  const event = (id, amount) =>
    JSON.stringify(
      {
        id: `evt_${id}`,
        object: 'event',
        api_version: '2024-06-20',
        created: NOW,
        data: {
          object: {
            id: `pi_${id}`,
            object: 'payment_intent',
            amount,
            currency: 'eur',
            description: 'Café ☕ — commande n°42',
            metadata: { order_id: `ord_${id}` },
            status: 'succeeded',
          },
        },
        livemode: false,
        pending_webhooks: 1,
        type: 'payment_intent.succeeded',
      },
      null,
      2,
    ) + '\n';
  const header = (payload, secret, timestamp = NOW) => webhooks.generateTestHeaderString({ payload, secret, timestamp });
  const check = (what, payload, h, secret, expected) =>
    sdkCheck(what, expected, () => webhooks.constructEvent(payload, h, secret, 300));
  const json = { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)' };
  const route = 'stripe';
  const at = '/cb/stripe';

  const valid = event('valid', 2000);
  const validSig = header(valid, secret0);
  check('valid', valid, validSig, secret0, true);
  add('valid', { route, path: at, headers: { ...json, 'stripe-signature': validSig }, body: valid, expect: OK });
  again('replay of the valid callback', 'valid', { expect: rejected('replay') });
  again('replay over HTTP/2', 'valid', { http2: true, expect: rejected('replay') });

  const tampered = tamper(valid, '"amount": 2000', '"amount": 9000');
  check('tampered', tampered, validSig, secret0, false);
  add('tampered body', { route, path: at, headers: { ...json, 'stripe-signature': validSig }, body: tampered, expect: rejected('signature_invalid') });

  const wrong = event('wrongkey', 2100);
  const wrongSig = header(wrong, unknown);
  check('wrong key', wrong, wrongSig, secret0, false);
  add('wrong secret', { route, path: at, headers: { ...json, 'stripe-signature': wrongSig }, body: wrong, expect: rejected('signature_invalid') });

  const stale = event('stale', 2200);
  const staleSig = header(stale, secret0, STALE);
  check('stale', stale, staleSig, secret0, false);
  sdkCheck('stale with a wide tolerance', true, () => webhooks.constructEvent(stale, staleSig, secret0, 3600));
  add('stale timestamp (10 min old)', { route, path: at, headers: { ...json, 'stripe-signature': staleSig }, body: stale, expect: rejected('stale_timestamp') });

  const future = event('future', 2300);
  const futureSig = header(future, secret0, FUTURE);
  add('timestamp 10 min in the future', { route, path: at, headers: { ...json, 'stripe-signature': futureSig }, body: future, expect: rejected('stale_timestamp') });

  const rotated = event('rotated', 2400);
  const rotatedSig = header(rotated, secret1);
  check('rotation', rotated, rotatedSig, secret1, true);
  add('key rotation: signed with the second secret', { route, path: at, headers: { ...json, 'stripe-signature': rotatedSig }, body: rotated, expect: OK });

  // During a secret roll Stripe sends one v1 per active secret (and may add v0): any may match.
  const rolling = event('rolling', 2500);
  const sigUnknown = header(rolling, unknown).split(',').find((p) => p.startsWith('v1='));
  const sigKnown = header(rolling, secret1).split(',').find((p) => p.startsWith('v1='));
  const rollingHeader = `t=${NOW},${sigUnknown},${sigKnown},v0=${crypto.randomBytes(32).toString('hex')}`;
  check('several v1', rolling, rollingHeader, secret1, true);
  add('several v1 (one unknown) and a v0', { route, path: at, headers: { ...json, 'stripe-signature': rollingHeader }, body: rolling, expect: OK });

  const h2 = event('h2', 2600);
  add('valid over HTTP/2', { route, path: at, http2: true, headers: { ...json, 'stripe-signature': header(h2, secret0) }, body: h2, expect: OK });

  retryScenario('stripe', (id) => {
    const body = event(`retry_${id}`, 2700);
    return { headers: { ...json, 'stripe-signature': header(body, secret0) }, body };
  });
  // Replay keys are scoped to the route: the callback the retry route accepted is new here.
  again('same callback on another route is a separate reservation', 'retry: backend 200 accepts the retry', {
    path: at, route, expect: OK,
  });
}

/**
 * Every provider: a route `<name>-retry` at `/status/*` (the test backend answers /status/NNN with
 * NNN). A callback whose first delivery got a backend 500 is released, so the provider's retry
 * passes; once the backend answered 2xx, the same callback is a replay.
 */
function retryScenario(routePrefix, make) {
  const { headers, body } = make('a');
  const route = `${routePrefix}-retry`;
  add('retry: first delivery, backend answers 500', { route, path: '/status/500/first-attempt', headers, body, expect: backendAnswers(500) });
  again('retry: backend 200 accepts the retry', 'retry: first delivery, backend answers 500', {
    path: '/status/200/second-attempt', expect: OK,
  });
  again('retry: a third delivery after the 2xx is a replay', 'retry: first delivery, backend answers 500', {
    path: '/status/200/third-attempt', expect: rejected('replay'),
  });
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks: `new Webhook(secret).sign(id, date, payload)` (v1, HMAC); v1a (Ed25519) is
// not in the JS library, so it is signed with node:crypto per the spec: Ed25519 over the same
// `id.timestamp.body`, `whpk_` + base64 of the raw 32-byte public key.

function standardWebhooks() {
  const { Webhook } = require('standardwebhooks');
  const newSecret = () => `whsec_${crypto.randomBytes(32).toString('base64')}`;
  const secret0 = newSecret();
  const secret1 = newSecret();
  const unknown = newSecret();
  writePrivate('sw-secret-0.txt', `${secret0}\n`);
  writePrivate('sw-secret-1.txt', `${secret1}\n`);
  const ed = crypto.generateKeyPairSync('ed25519');
  const edOther = crypto.generateKeyPairSync('ed25519');
  const rawPub = ed.publicKey.export({ format: 'jwk' }).x; // base64url of the 32 raw bytes
  const whpk = `whpk_${Buffer.from(rawPub, 'base64url').toString('base64')}`;
  writePublic('sw-ed25519.whpk', `${whpk}\n`);

  const sign = (secret, id, ts, body) => new Webhook(secret).sign(id, new Date(ts * 1000), body);
  const signV1a = (key, id, ts, body) =>
    `v1a,${crypto.sign(null, Buffer.from(`${id}.${ts}.${body}`, 'utf8'), key).toString('base64')}`;
  const check = (what, secret, headers, body, expected) =>
    sdkCheck(what, expected, () => new Webhook(secret).verify(body, headers));
  const payload = (id, amount) =>
    JSON.stringify({ type: 'invoice.paid', timestamp: new Date(NOW * 1000).toISOString(), data: { id, amount, customer: 'Jörg Müller' } });
  const hdrs = (id, ts, sig, names = 'webhook') => ({
    'content-type': 'application/json',
    [`${names}-id`]: id,
    [`${names}-timestamp`]: String(ts),
    [`${names}-signature`]: sig,
  });
  const route = 'standard-webhooks';
  const at = '/cb/standard-webhooks';

  const body = payload('inv_valid', 100);
  const sig = sign(secret0, 'msg_valid', NOW, body);
  check('valid', secret0, hdrs('msg_valid', NOW, sig), body, true);
  add('valid (v1)', { route, path: at, headers: hdrs('msg_valid', NOW, sig), body, expect: OK });
  again('replay of the valid callback', 'valid (v1)', { expect: rejected('replay') });

  const tampered = tamper(body, '"amount":100', '"amount":900');
  check('tampered', secret0, hdrs('msg_valid', NOW, sig), tampered, false);
  add('tampered body', { route, path: at, headers: hdrs('msg_tampered', NOW, sign(secret0, 'msg_tampered', NOW, body)), body: tampered, expect: rejected('signature_invalid') });
  // The id is signed: the same signature under another id does not verify.
  add('signature moved to another webhook-id', { route, path: at, headers: hdrs('msg_other', NOW, sig), body, expect: rejected('signature_invalid') });

  const wrong = payload('inv_wrong', 110);
  const wrongSig = sign(unknown, 'msg_wrong', NOW, wrong);
  check('wrong key', secret0, hdrs('msg_wrong', NOW, wrongSig), wrong, false);
  add('wrong secret', { route, path: at, headers: hdrs('msg_wrong', NOW, wrongSig), body: wrong, expect: rejected('signature_invalid') });

  const stale = payload('inv_stale', 120);
  const staleSig = sign(secret0, 'msg_stale', STALE, stale);
  check('stale', secret0, hdrs('msg_stale', STALE, staleSig), stale, false);
  add('stale timestamp (10 min old)', { route, path: at, headers: hdrs('msg_stale', STALE, staleSig), body: stale, expect: rejected('stale_timestamp') });

  const rotated = payload('inv_rotated', 130);
  const rotatedSig = sign(secret1, 'msg_rotated', NOW, rotated);
  check('rotation', secret1, hdrs('msg_rotated', NOW, rotatedSig), rotated, true);
  add('key rotation: signed with the second secret', { route, path: at, headers: hdrs('msg_rotated', NOW, rotatedSig), body: rotated, expect: OK });

  // A signature list as sent during rotation: an unknown v1 first, then the valid one.
  const list = payload('inv_list', 140);
  const listSig = `${sign(unknown, 'msg_list', NOW, list)} ${sign(secret0, 'msg_list', NOW, list)}`;
  check('signature list', secret0, hdrs('msg_list', NOW, listSig), list, true);
  add('signature list: unknown v1 then valid v1', { route, path: at, headers: hdrs('msg_list', NOW, listSig), body: list, expect: OK });

  // Svix sends the same scheme under svix-* names; the library's sign() is the Svix signer too.
  const svix = payload('inv_svix', 150);
  const svixSig = sign(secret0, 'msg_svix', NOW, svix);
  add('svix-* header names', { route, path: at, headers: hdrs('msg_svix', NOW, svixSig, 'svix'), body: svix, expect: OK });

  const v1a = payload('inv_v1a', 160);
  add('v1a (Ed25519) signature', { route, path: at, headers: hdrs('msg_v1a', NOW, signV1a(ed.privateKey, 'msg_v1a', NOW, v1a)), body: v1a, expect: OK });
  const v1aWrong = payload('inv_v1a_wrong', 170);
  add('v1a signed with an unknown Ed25519 key', { route, path: at, headers: hdrs('msg_v1a_wrong', NOW, signV1a(edOther.privateKey, 'msg_v1a_wrong', NOW, v1aWrong)), body: v1aWrong, expect: rejected('signature_invalid') });
  const v1aStale = payload('inv_v1a_stale', 180);
  add('v1a stale timestamp', { route, path: at, headers: hdrs('msg_v1a_stale', STALE, signV1a(ed.privateKey, 'msg_v1a_stale', STALE, v1aStale)), body: v1aStale, expect: rejected('stale_timestamp') });
  const v1aTampered = payload('inv_v1a_tampered', 190);
  add('v1a tampered body', { route, path: at, headers: hdrs('msg_v1a_tampered', NOW, signV1a(ed.privateKey, 'msg_v1a_tampered', NOW, v1aTampered)), body: tamper(v1aTampered, '"amount":190', '"amount":999'), expect: rejected('signature_invalid') });

  const h2 = payload('inv_h2', 200);
  add('valid over HTTP/2', { route, path: at, http2: true, headers: hdrs('msg_h2', NOW, sign(secret0, 'msg_h2', NOW, h2)), body: h2, expect: OK });

  retryScenario('standard-webhooks', () => {
    const b = payload('inv_retry', 210);
    return { headers: hdrs('msg_retry', NOW, sign(secret0, 'msg_retry', NOW, b)), body: b };
  });
}

// ---------------------------------------------------------------------------------------------
// Adyen: @adyen/api-library hmacValidator.calculateHmac(NotificationRequestItem, hexKey) for
// standard notifications, calculateHmac(rawBody, hexKey) for the HmacSignature header form;
// checked with validateHMAC / validateHMACSignature.

function adyen() {
  const { hmacValidator: HmacValidator } = require('@adyen/api-library');
  const v = new HmacValidator();
  // Adyen shows HMAC keys as uppercase hex.
  const newKey = () => crypto.randomBytes(32).toString('hex').toUpperCase();
  const key0 = newKey();
  const key1 = newKey();
  const unknown = newKey();
  writePrivate('adyen-key-0.hex', `${key0}\n`);
  writePrivate('adyen-key-1.hex', `${key1}\n`);

  const item = (psp, value, extra = {}) => ({
    additionalData: { authCode: '1234', cardSummary: '1111', expiryDate: '03/2030' },
    amount: { currency: 'EUR', value },
    eventCode: 'AUTHORISATION',
    eventDate: '2024-06-01T12:00:00+02:00',
    merchantAccountCode: 'PayguardECOM',
    merchantReference: `order-${psp}`,
    paymentMethod: 'visa',
    pspReference: psp,
    reason: '1234:1111:03/2030',
    success: 'true',
    ...extra,
  });
  const signItem = (it, key) => {
    const signed = JSON.parse(JSON.stringify(it));
    signed.additionalData.hmacSignature = v.calculateHmac(signed, key);
    sdkCheck(`item ${it.pspReference}`, true, () => v.validateHMAC(signed, key));
    return signed;
  };
  const notification = (items) =>
    JSON.stringify({ live: 'false', notificationItems: items.map((i) => ({ NotificationRequestItem: i })) });
  const json = { 'content-type': 'application/json' };
  const route = 'adyen-hmac';
  const at = '/cb/adyen';

  const valid = notification([signItem(item('QFQTPCQ8HXSKGK82', 1000), key0)]);
  add('valid notification item', { route, path: at, headers: json, body: valid, expect: OK });
  again('replay of the valid notification', 'valid notification item', { expect: rejected('replay') });

  const tampered = tamper(valid, '"value":1000', '"value":9000');
  sdkCheck('tampered item', false, () => v.validateHMAC(JSON.parse(tampered).notificationItems[0].NotificationRequestItem, key0));
  add('tampered amount', { route, path: at, headers: json, body: tampered, expect: rejected('signature_invalid') });

  // Not signed: changing an unsigned field (eventDate, additionalData) is not detectable; payguard
  // must still accept it, as Adyen's library does.
  const unsignedChange = tamper(notification([signItem(item('UNSIGNEDFIELD001', 1050), key0)]), '"paymentMethod":"visa"', '"paymentMethod":"mc"');
  sdkCheck('unsigned field changed', true, () => v.validateHMAC(JSON.parse(unsignedChange).notificationItems[0].NotificationRequestItem, key0));
  add('change of an unsigned field (as the SDK)', { route, path: at, headers: json, body: unsignedChange, expect: OK });

  const wrong = notification([signItem(item('WRONGKEY00000001', 1100), unknown)]);
  sdkCheck('wrong key', false, () => v.validateHMAC(JSON.parse(wrong).notificationItems[0].NotificationRequestItem, key0));
  add('wrong HMAC key', { route, path: at, headers: json, body: wrong, expect: rejected('signature_invalid') });

  add('key rotation: signed with the second key', { route, path: at, headers: json, body: notification([signItem(item('ROTATED000000001', 1200), key1)]), expect: OK });

  // Fields as Adyen sends them for a refund: originalReference present; ':' and non-ASCII in
  // the merchant reference (notification items are joined with ':' without escaping).
  const refund = item('REFUND0000000001', 500, {
    eventCode: 'REFUND',
    originalReference: 'QFQTPCQ8HXSKGK82',
    merchantReference: 'Bestellung:ÄÖÜ:42',
    success: 'false',
  });
  add('refund item with originalReference, ":" and non-ASCII', { route, path: at, headers: json, body: notification([signItem(refund, key0)]), expect: OK });
  // The same content as a Java JSON writer may serialise it (\uXXXX and \/ escapes): the signed
  // values are the decoded strings, not the raw bytes.
  const escapedItem = signItem(item('ESCAPED000000001', 510, { merchantReference: 'Bestellung/ÄÖÜ:43' }), key0);
  const escaped = notification([escapedItem]).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).replace(/\//g, '\\/');
  assert.ok(escaped.includes('\\u00c4') && escaped.includes('\\/'));
  sdkCheck('escaped JSON', true, () => v.validateHMAC(JSON.parse(escaped).notificationItems[0].NotificationRequestItem, key0));
  add('item serialised with \\u and \\/ escapes', { route, path: at, headers: json, body: escaped, expect: OK });

  const batch = notification([signItem(item('BATCH00000000001', 1300), key0), signItem(item('BATCH00000000002', 1400), key1)]);
  add('batch of two items (both keys)', { route, path: at, headers: json, body: batch, expect: OK });
  const badBatch = tamper(
    notification([signItem(item('BADBATCH00000001', 1500), key0), signItem(item('BADBATCH00000002', 1600), key0)]),
    '"value":1600', '"value":1601',
  );
  add('batch with one tampered item', { route, path: at, headers: json, body: badBatch, expect: rejected('signature_invalid') });

  // Header form (Balance Platform / Management webhooks): HmacSignature over the raw body.
  const platform = JSON.stringify({ data: { balancePlatform: 'YOUR_BALANCE_PLATFORM', accountHolder: { id: 'AH00000000000000000000001', status: 'active' } }, environment: 'test', type: 'balancePlatform.accountHolder.created' });
  const platformSig = v.calculateHmac(platform, key0);
  sdkCheck('header form', true, () => v.validateHMACSignature(key0, platformSig, platform));
  add('HmacSignature header over the raw body', { route, path: at, headers: { ...json, hmacsignature: platformSig }, body: platform, expect: OK });
  const platformTampered = tamper(platform, '"status":"active"', '"status":"closed"');
  sdkCheck('header form tampered', false, () => v.validateHMACSignature(key0, platformSig, platformTampered));
  add('HmacSignature header, tampered body', { route, path: at, headers: { ...json, HmacSignature: platformSig }, body: platformTampered, expect: rejected('signature_invalid') });
  const platformRotated = tamper(platform, 'AH00000000000000000000001', 'AH00000000000000000000002');
  add('HmacSignature header, second key', { route, path: at, http2: true, headers: { ...json, HmacSignature: v.calculateHmac(platformRotated, key1) }, body: platformRotated, expect: OK });

  add('valid over HTTP/2', { route, path: at, http2: true, headers: json, body: notification([signItem(item('HTTP2ITEM0000001', 1700), key0)]), expect: OK });

  retryScenario('adyen-hmac', () => ({ headers: json, body: notification([signItem(item('RETRY00000000001', 1800), key0)]) }));
}

// ---------------------------------------------------------------------------------------------
// Alipay: asynchronous notification (form), RSA2. Alipay's server signs these; the SDK only
// verifies them. So: the sign content is built as the SDK's notifyRSACheck builds it (sorted
// `k=v` joined by `&`, without `sign` and `sign_type`), signed with the SDK's own RSA2 signer
// (alipay-sdk util `signatureV3`: RSA-SHA256, base64), and every case is checked with
// `AlipaySdk#checkNotifySignV2` on the form-decoded fields, as an Express app would call it.

function alipay() {
  const sdkDir = path.dirname(require.resolve('alipay-sdk/package.json'));
  // Not in the package's "exports": loaded by file path.
  const { signatureV3 } = require(path.join(sdkDir, 'dist/commonjs/util.js'));
  const { AlipaySdk } = require('alipay-sdk');

  const alipayKeys = rsaKeyPair(); // stands in for Alipay's platform key
  const other = rsaKeyPair();
  const merchant = rsaKeyPair(); // the SDK needs an app private key to be constructed
  const appId = '2021004100000001';
  // Alipay's dashboard shows the public key as bare base64 (no PEM armour): used for the main
  // route; the retry route is configured with the same key as PEM.
  const bare = alipayKeys.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  writePublic('alipay-public.b64', `${bare}\n`);
  writePublic('alipay-public.pem', spkiPem(alipayKeys.publicKey));
  const privateKeyPem = privatePem(alipayKeys.privateKey, 'pkcs1');
  writePrivate('alipay-platform-private.pem', privateKeyPem);

  const sdk = new AlipaySdk({
    appId,
    privateKey: privatePem(merchant.privateKey, 'pkcs1'),
    keyType: 'PKCS1',
    alipayPublicKey: bare,
  });

  const beijing = (unix) => new Date((unix + 8 * 3600) * 1000).toISOString().slice(0, 19).replace('T', ' ');
  const fields = (n, overrides = {}) => ({
    gmt_create: beijing(NOW - 30),
    charset: 'utf-8',
    seller_email: 'shop@example.com',
    subject: `测试 订单 #${n} 100% + tax & more = ok`,
    buyer_id: '2088102122524333',
    invoice_amount: '88.88',
    notify_id: `2024060100222${n}0000${crypto.randomBytes(6).toString('hex')}`,
    fund_bill_list: '[{"amount":"88.88","fundChannel":"ALIPAYACCOUNT"}]',
    notify_type: 'trade_status_sync',
    trade_status: 'TRADE_SUCCESS',
    receipt_amount: '88.88',
    app_id: appId,
    buyer_pay_amount: '88.88',
    seller_id: '2088102119685838',
    gmt_payment: beijing(NOW - 20),
    notify_time: beijing(NOW),
    passback_params: 'a=1&b=2',
    version: '1.0',
    out_trade_no: `ORDER-${n}`,
    total_amount: '88.88',
    trade_no: `2024060122001424330501${n}`,
    auth_app_id: appId,
    buyer_logon_id: 'csq***@sandbox.com',
    point_amount: '0.00',
    ...overrides,
  });
  const signContent = (f) =>
    Object.keys(f).filter((k) => k && k !== 'sign' && k !== 'sign_type').sort().map((k) => `${k}=${f[k]}`).join('&');
  const signed = (f, key = privateKeyPem) => ({ ...f, sign: signatureV3(signContent(f), key), sign_type: 'RSA2' });
  // Alipay posts application/x-www-form-urlencoded: space as '+', everything else %-encoded.
  const encode = (f) => new URLSearchParams(Object.entries(f)).toString();
  const check = (what, body, expected) =>
    sdkCheck(what, expected, () => sdk.checkNotifySignV2(Object.fromEntries(new URLSearchParams(body))));
  const form = { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' };
  const route = 'alipay-rsa2';
  const at = '/cb/alipay';

  const valid = encode(signed(fields(1)));
  check('valid', valid, true);
  add('valid notification', { route, path: at, headers: form, body: valid, expect: OK });
  again('replay of the valid notification (same notify_id)', 'valid notification', { expect: rejected('replay') });

  const tampered = tamper(valid, 'total_amount=88.88', 'total_amount=98.88');
  check('tampered', tampered, false);
  add('tampered total_amount', { route, path: at, headers: form, body: tampered, expect: rejected('signature_invalid') });

  const wrong = encode(signed(fields(2), privatePem(other.privateKey)));
  check('wrong key', wrong, false);
  add('signed with another RSA key', { route, path: at, headers: form, body: wrong, expect: rejected('signature_invalid') });

  const stale = encode(signed(fields(3, { notify_time: beijing(STALE) })));
  check('stale (the SDK has no freshness check)', stale, true);
  add('stale notify_time (10 min old, Beijing time)', { route, path: at, headers: form, body: stale, expect: rejected('stale_timestamp') });

  const otherApp = encode(signed(fields(4, { app_id: '2021009999999999', auth_app_id: '2021009999999999' })));
  check('other app_id', otherApp, true);
  add('validly signed for another app_id', { route, path: at, headers: form, body: otherApp, expect: rejected('signature_invalid') });

  // Field order in the body does not matter (the content is sorted), nor does an absent sign_type.
  const shuffled = signed(fields(5));
  const reordered = Object.fromEntries(Object.entries(shuffled).reverse().filter(([k]) => k !== 'sign_type'));
  const reorderedBody = encode(reordered);
  check('reordered, no sign_type', reorderedBody, true);
  add('fields in another order, no sign_type', { route, path: at, headers: form, body: reorderedBody, expect: OK });

  // Empty values are signed too (e.g. an empty passback_params).
  const empty = encode(signed(fields(6, { passback_params: '' })));
  check('empty value', empty, true);
  add('empty value kept in the signed content', { route, path: at, headers: form, body: empty, expect: OK });

  const h2 = encode(signed(fields(7)));
  add('valid over HTTP/2', { route, path: at, http2: true, headers: form, body: h2, expect: OK });

  retryScenario('alipay-rsa2', () => ({ headers: form, body: encode(signed(fields(8))) }));
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay APIv3: wechatpay-axios-plugin `Formatter.response(ts, nonce, body)` +
// `Rsa.sign` (SHA256withRSA, base64), `Aes.AesGcm.encrypt` for the resource (APIv3 key);
// checked with `Rsa.verify` / `Aes.AesGcm.decrypt`. Both key modes: WeChat Pay public key
// (`PUB_KEY_ID_…` serial) and platform certificate (its serial).

function wechatpay() {
  const { Rsa, Aes, Formatter } = require('wechatpay-axios-plugin');
  const pubA = rsaKeyPair();
  const pubB = rsaKeyPair();
  const platform = rsaKeyPair();
  const other = rsaKeyPair();
  const pubIdA = `PUB_KEY_ID_0114${crypto.randomBytes(12).toString('hex').toUpperCase()}`;
  const pubIdB = `PUB_KEY_ID_0115${crypto.randomBytes(12).toString('hex').toUpperCase()}`;
  writePublic('wechatpay-pub-a.pem', spkiPem(pubA.publicKey));
  writePublic('wechatpay-pub-b.pem', spkiPem(pubB.publicKey));
  const platformKeyFile = writePrivate('wechatpay-platform-private.pem', privatePem(platform.privateKey));
  const cert = selfSignedCert(
    platformKeyFile,
    path.join(dir, 'wechatpay-platform.crt'),
    '/C=CN/O=Tenpay.com/OU=Tenpay.com CA Center/CN=Tenpay.com Root CA',
    randomSerialHex(),
  );
  const apiv3 = Formatter.nonce(32); // 32 ASCII characters, as the merchant platform issues
  const otherApiv3 = Formatter.nonce(32);
  writePrivate('wechatpay-apiv3.key', `${apiv3}\n`);
  vars.PUB_ID_A = pubIdA;
  vars.PUB_ID_B = pubIdB;
  vars.CERT_SERIAL = cert.serial;

  const notification = (n, key = apiv3) => {
    const plaintext = JSON.stringify({
      mchid: '1230000109',
      appid: 'wxd678efh567hg6787',
      out_trade_no: `1217752501201407033233368${n}`,
      transaction_id: `4200000000201407033233368${n}`,
      trade_type: 'JSAPI',
      trade_state: 'SUCCESS',
      trade_state_desc: '支付成功',
      success_time: '2024-06-01T12:00:00+08:00',
      payer: { openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' },
      amount: { total: 100 * n, payer_total: 100 * n, currency: 'CNY', payer_currency: 'CNY' },
    });
    const nonce = Formatter.nonce(12);
    const ciphertext = Aes.AesGcm.encrypt(plaintext, key, nonce, 'transaction');
    if (key === apiv3) {
      assert.equal(Aes.AesGcm.decrypt(ciphertext, apiv3, nonce, 'transaction'), plaintext);
    }
    return JSON.stringify({
      id: `EV-20240601${n}`,
      create_time: '2024-06-01T12:00:01+08:00',
      resource_type: 'encrypt-resource',
      event_type: 'TRANSACTION.SUCCESS',
      summary: '支付成功',
      resource: { original_type: 'transaction', algorithm: 'AEAD_AES_256_GCM', ciphertext, associated_data: 'transaction', nonce },
    });
  };
  const headers = (body, serial, key, { ts = NOW, nonce = Formatter.nonce(32) } = {}) => {
    const signature = Rsa.sign(Formatter.response(ts, nonce, body), key);
    return {
      'content-type': 'application/json',
      'wechatpay-timestamp': String(ts),
      'wechatpay-nonce': nonce,
      'wechatpay-signature': signature,
      'wechatpay-serial': serial,
      'wechatpay-signature-type': 'WECHATPAY2-SHA256-RSA2048',
    };
  };
  const check = (what, h, body, publicKey, expected) =>
    sdkCheck(what, expected, () =>
      Rsa.verify(Formatter.response(h['wechatpay-timestamp'], h['wechatpay-nonce'], body), h['wechatpay-signature'], publicKey));
  const route = 'wechatpay-v3';
  const at = '/cb/wechatpay';

  const valid = notification(1);
  const validH = headers(valid, pubIdA, pubA.privateKey);
  check('valid', validH, valid, pubA.publicKey, true);
  add('valid, public-key mode', { route, path: at, headers: validH, body: valid, expect: OK });
  again('replay of the valid callback (same nonce)', 'valid, public-key mode', { expect: rejected('replay') });

  const tampered = tamper(valid, '"summary":"支付成功"', '"summary":"支付失败"');
  check('tampered', validH, tampered, pubA.publicKey, false);
  add('tampered body', { route, path: at, headers: validH, body: tampered, expect: rejected('signature_invalid') });

  const wrong = notification(2);
  const wrongH = headers(wrong, pubIdA, other.privateKey);
  check('wrong key', wrongH, wrong, pubA.publicKey, false);
  add('signed with another key under a known serial', { route, path: at, headers: wrongH, body: wrong, expect: rejected('signature_invalid') });

  const unknownSerial = notification(3);
  add('unknown serial', { route, path: at, headers: headers(unknownSerial, 'PUB_KEY_ID_0116000000000000000000000000', pubA.privateKey), body: unknownSerial, expect: rejected('signature_invalid') });

  const stale = notification(4);
  const staleH = headers(stale, pubIdA, pubA.privateKey, { ts: STALE });
  check('stale', staleH, stale, pubA.publicKey, true);
  add('stale timestamp (10 min old)', { route, path: at, headers: staleH, body: stale, expect: rejected('stale_timestamp') });

  const certMode = notification(5);
  const certH = headers(certMode, cert.serial, platform.privateKey);
  check('cert mode', certH, certMode, cert.pem, true);
  add('valid, platform-certificate mode', { route, path: at, headers: certH, body: certMode, expect: OK });

  const rotated = notification(6);
  add('key rotation: second public key id', { route, path: at, headers: headers(rotated, pubIdB, pubB.privateKey), body: rotated, expect: OK });

  // Validly signed, but the resource was not encrypted with this merchant's APIv3 key.
  const foreign = notification(7, otherApiv3);
  add('resource encrypted with another APIv3 key', { route, path: at, headers: headers(foreign, pubIdA, pubA.privateKey), body: foreign, expect: rejected('signature_invalid') });

  // WeChat Pay's signature probe: must never be accepted.
  const probe = notification(8);
  const probeH = headers(probe, pubIdA, pubA.privateKey);
  probeH['wechatpay-signature'] = `WECHATPAY/SIGNTEST/${probeH['wechatpay-signature']}`;
  add('WECHATPAY/SIGNTEST probe', { route, path: at, headers: probeH, body: probe, expect: rejected('signature_invalid') });

  const h2 = notification(9);
  add('valid over HTTP/2', { route, path: at, http2: true, headers: headers(h2, pubIdA, pubA.privateKey), body: h2, expect: OK });

  retryScenario('wechatpay-v3', () => {
    const b = notification(10);
    return { headers: headers(b, cert.serial, platform.privateKey), body: b };
  });
}

// ---------------------------------------------------------------------------------------------
// PayPal: no PayPal SDK signs webhooks (PayPal's own servers do; the SDKs only call the
// verify-webhook-signature API). Signed with node:crypto exactly as PayPal documents for offline
// verification: SHA256withRSA over `transmission_id|transmission_time|webhook_id|crc32(body)`
// (CRC-32 as unsigned decimal), with a certificate generated now and pinned in `certs`.

function paypal() {
  const keyA = rsaKeyPair();
  const keyB = rsaKeyPair();
  const other = rsaKeyPair();
  const fileA = writePrivate('paypal-a.key', privatePem(keyA.privateKey));
  const fileB = writePrivate('paypal-b.key', privatePem(keyB.privateKey));
  selfSignedCert(fileA, path.join(dir, 'paypal-a.crt'), '/C=US/O=PayPal, Inc./CN=messageverificationcerts.paypal.com', randomSerialHex());
  selfSignedCert(fileB, path.join(dir, 'paypal-b.crt'), '/C=US/O=PayPal, Inc./CN=messageverificationcerts.paypal.com', randomSerialHex());
  const urlA = 'https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77';
  const urlB = 'https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-rotated0';
  const webhookId = '1JE4291016473214C';
  vars.CERT_URL_A = urlA;
  vars.CERT_URL_B = urlB;
  vars.WEBHOOK_ID = webhookId;

  const event = (n, value) =>
    JSON.stringify({
      id: `WH-${n}-8PT597110X687430LKGECATA`,
      event_version: '1.0',
      create_time: new Date(NOW * 1000).toISOString(),
      resource_type: 'capture',
      event_type: 'PAYMENT.CAPTURE.COMPLETED',
      summary: 'Payment completed for EUR 10.00 EUR',
      resource: { id: `42311647XV${n}`, amount: { currency_code: 'EUR', value }, status: 'COMPLETED', custom_id: 'Bestellung Nr. 42 – Müller' },
    });
  const rfc3339 = (unix) => new Date(unix * 1000).toISOString().replace('.000Z', 'Z');
  const headers = (body, { key = keyA.privateKey, url = urlA, time = rfc3339(NOW), id = crypto.randomUUID(), webhook = webhookId, algo = 'SHA256withRSA' } = {}) => {
    const message = `${id}|${time}|${webhook}|${zlib.crc32(Buffer.from(body, 'utf8'))}`;
    const sig = crypto.sign('sha256', Buffer.from(message, 'utf8'), key).toString('base64');
    return {
      'content-type': 'application/json',
      'paypal-transmission-id': id,
      'paypal-transmission-time': time,
      'paypal-transmission-sig': sig,
      'paypal-cert-url': url,
      'paypal-auth-algo': algo,
    };
  };
  const route = 'paypal';
  const at = '/cb/paypal';

  const valid = event(1, '10.00');
  add('valid', { route, path: at, headers: headers(valid), body: valid, expect: OK });
  again('replay of the valid callback (same transmission id)', 'valid', { expect: rejected('replay') });
  add('tampered body', { route, path: at, headers: headers(valid), body: tamper(valid, '"value":"10.00"', '"value":"99.00"'), expect: rejected('signature_invalid') });
  const wrong = event(2, '11.00');
  add('signed with another key under a pinned URL', { route, path: at, headers: headers(wrong, { key: other.privateKey }), body: wrong, expect: rejected('signature_invalid') });
  const unpinned = event(3, '12.00');
  add('certificate URL not pinned', { route, path: at, headers: headers(unpinned, { url: 'https://api.paypal.com.evil.example/certs/CERT-1' }), body: unpinned, expect: rejected('signature_invalid') });
  const stale = event(4, '13.00');
  add('stale transmission time (10 min old)', { route, path: at, headers: headers(stale, { time: rfc3339(STALE) }), body: stale, expect: rejected('stale_timestamp') });
  const rotated = event(5, '14.00');
  add('key rotation: second pinned certificate', { route, path: at, headers: headers(rotated, { key: keyB.privateKey, url: urlB }), body: rotated, expect: OK });
  const otherHook = event(6, '15.00');
  add('signed for another webhook id', { route, path: at, headers: headers(otherHook, { webhook: 'WH-OTHER-ID' }), body: otherHook, expect: rejected('signature_invalid') });
  const millis = event(7, '16.00');
  add('transmission time with milliseconds', { route, path: at, headers: headers(millis, { time: new Date(NOW * 1000 + 123).toISOString() }), body: millis, expect: OK });
  const h2 = event(8, '17.00');
  add('valid over HTTP/2', { route, path: at, http2: true, headers: headers(h2), body: h2, expect: OK });

  retryScenario('paypal', () => {
    const b = event(9, '18.00');
    return { headers: headers(b), body: b };
  });
}

// ---------------------------------------------------------------------------------------------
// Generic `hmac`: GitHub style (`X-Hub-Signature-256: sha256=<hex>`) signed with
// @octokit/webhooks-methods `sign`, checked with its `verify`; and our own clients' signed
// requests (template over method, path, query, timestamp, nonce, body; key id header; base64),
// signed with node:crypto as a client would.

async function hmac() {
  const { sign, verify } = await import('@octokit/webhooks-methods');
  const secret0 = crypto.randomBytes(20).toString('hex');
  const secret1 = crypto.randomBytes(20).toString('hex');
  const unknown = crypto.randomBytes(20).toString('hex');
  writePrivate('github-secret-0.txt', `${secret0}\n`);
  writePrivate('github-secret-1.txt', `${secret1}\n`);
  const clientKeys = { 'client-2024': crypto.randomBytes(32).toString('base64'), 'client-2025': crypto.randomBytes(32).toString('base64') };
  writePrivate('client-2024.key', `${clientKeys['client-2024']}\n`);
  writePrivate('client-2025.key', `${clientKeys['client-2025']}\n`);

  const push = (n) =>
    JSON.stringify({ ref: 'refs/heads/main', before: '0'.repeat(40), after: crypto.randomBytes(20).toString('hex'), repository: { full_name: 'acme/payguard', id: n }, pusher: { name: 'Zoë' } }, null, 2);
  const gh = async (body, secret, extra = {}) => {
    const sig = await sign(secret, body);
    await sdkCheck('octokit verify', secret !== unknown, () => verify(secret0, body, sig).then((a) => a || verify(secret1, body, sig)));
    return { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': crypto.randomUUID(), 'x-hub-signature-256': sig, ...extra };
  };
  let route = 'hmac';
  let at = '/cb/github';

  const valid = push(1);
  add('GitHub: valid', { route, path: at, headers: await gh(valid, secret0), body: valid, expect: OK });
  again('GitHub: replay (same signature)', 'GitHub: valid', { expect: rejected('replay') });
  add('GitHub: tampered body', { route, path: at, headers: await gh(valid, secret0), body: tamper(valid, '"id": 1', '"id": 7'), expect: rejected('signature_invalid') });
  const wrong = push(2);
  add('GitHub: wrong secret', { route, path: at, headers: await gh(wrong, unknown), body: wrong, expect: rejected('signature_invalid') });
  const rotated = push(3);
  add('GitHub: key rotation, second secret', { route, path: at, headers: await gh(rotated, secret1), body: rotated, expect: OK });
  const upper = push(4);
  const upperH = await gh(upper, secret0);
  upperH['x-hub-signature-256'] = `sha256=${upperH['x-hub-signature-256'].slice(7).toUpperCase()}`;
  add('GitHub: uppercase hex is not GitHub\'s format', { route, path: at, headers: upperH, body: upper, expect: rejected('signature_invalid') });
  const h2 = push(5);
  add('GitHub: valid over HTTP/2', { route, path: at, http2: true, headers: await gh(h2, secret0), body: h2, expect: OK });
  const retry = push(6);
  const retryH = await gh(retry, secret0);
  retryScenario('hmac', () => ({ headers: retryH, body: retry }));

  // Our own clients: signed request with a template (path and query are signed).
  route = 'hmac-client';
  const client = (method, urlPath, query, body, { keyId = 'client-2024', key = clientKeys[keyId], ts = NOW, nonce = crypto.randomUUID() } = {}) => {
    const message = `${method}\n${urlPath}\n${query}\n${ts}\n${nonce}\n${body}`;
    const sig = crypto.createHmac('sha256', Buffer.from(key, 'utf8')).update(message, 'utf8').digest('base64');
    return {
      path: query ? `${urlPath}?${query}` : urlPath,
      headers: { 'content-type': 'application/json', 'x-key-id': keyId, 'x-timestamp': String(ts), 'x-nonce': nonce, 'x-signature': `v1=${sig}` },
    };
  };
  const order = '{"sku":"mug","qty":2}';
  const c1 = client('POST', '/api/client/orders', 'dry_run=0&currency=EUR', order);
  add('client: valid', { route, path: c1.path, headers: c1.headers, body: order, expect: OK });
  again('client: replay (same nonce)', 'client: valid', { expect: rejected('replay') });
  const c2 = client('POST', '/api/client/orders', 'dry_run=0&currency=EUR', order);
  add('client: path changed', { route, path: c2.path.replace('/orders', '/refunds'), headers: c2.headers, body: order, expect: rejected('signature_invalid') });
  const c3 = client('POST', '/api/client/orders', 'dry_run=0&currency=EUR', order);
  add('client: query changed', { route, path: c3.path.replace('dry_run=0', 'dry_run=1'), headers: c3.headers, body: order, expect: rejected('signature_invalid') });
  const c4 = client('POST', '/api/client/orders', '', order);
  add('client: method changed', { route, method: 'PUT', path: c4.path, headers: c4.headers, body: order, expect: rejected('signature_invalid') });
  const c5 = client('POST', '/api/client/orders', '', order, { ts: STALE });
  add('client: stale timestamp', { route, path: c5.path, headers: c5.headers, body: order, expect: rejected('stale_timestamp') });
  const c6 = client('POST', '/api/client/orders', '', order, { keyId: 'client-2023', key: clientKeys['client-2024'] });
  add('client: unknown key id', { route, path: c6.path, headers: c6.headers, body: order, expect: rejected('signature_invalid') });
  const c7 = client('POST', '/api/client/orders', '', order, { keyId: 'client-2025' });
  add('client: key rotation, second key id', { route, path: c7.path, headers: c7.headers, body: order, expect: OK });
  const c8 = client('POST', '/api/client/orders', '', order, { keyId: 'client-2025', key: clientKeys['client-2024'] });
  add('client: key id names another key', { route, path: c8.path, headers: c8.headers, body: order, expect: rejected('signature_invalid') });
  // The client signs the path exactly as it sends it (percent-encoded).
  const c9 = client('POST', '/api/client/orders/caf%C3%A9%20bar', 'q=a%2Bb', order);
  add('client: percent-encoded path and query, signed as sent', { route, path: c9.path, headers: c9.headers, body: order, expect: OK });
  const c10 = client('PUT', '/api/client/orders/7', '', order);
  add('client: valid PUT over HTTP/2', { route, method: 'PUT', http2: true, path: c10.path, headers: c10.headers, body: order, expect: OK });
}

// ---------------------------------------------------------------------------------------------

const PROVIDERS = {
  stripe: ['stripe', stripe],
  'standard-webhooks': ['standard-webhooks', standardWebhooks],
  'adyen-hmac': ['adyen-hmac', adyen],
  'alipay-rsa2': ['alipay-rsa2', alipay],
  'wechatpay-v3': ['wechatpay-v3', wechatpay],
  paypal: ['paypal', paypal],
  hmac: ['hmac', hmac],
};

async function main() {
  const entry = PROVIDERS[provider];
  if (!entry) {
    throw new Error(`unknown provider ${provider}; expected one of ${Object.keys(PROVIDERS).join(', ')}`);
  }
  await entry[1]();
  process.stdout.write(`${JSON.stringify({ provider: entry[0], vars, cases }, null, 1)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
