// The dashboard in a real browser (Debian's chromium, driven by
// playwright-core), against the real server that tests/suite/browser.rs
// started. Env: BASE, ADMIN, ACCOUNT, TOKEN, OTHER, OTHER_TOKEN, CLOSED (a
// closed account), SHOTS.
// Exits non-zero (with the failed check) on the first failure.
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const { BASE, ADMIN, ACCOUNT, TOKEN, OTHER, OTHER_TOKEN, CLOSED, SHOTS } = process.env;
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(SHOTS, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error('check failed: ' + what);
}
const fmt = (n) => n.toLocaleString('en-US');
const api = async (method, path, body, key) => {
  const headers = { authorization: 'Bearer ' + ADMIN };
  if (body) headers['content-type'] = 'application/json';
  if (key) headers['idempotency-key'] = key;
  const r = await fetch(BASE + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  return r.status === 204 ? null : r.json();
};
// "Dec 1", with ", 2027" when not this year (in the account's zone): as the page writes days.
const shortDay = (instant, zone, nowIso) => {
  const opts = { timeZone: zone, month: 'short', day: 'numeric' };
  const year = (t) => new Date(t).toLocaleDateString('en-US', { timeZone: zone, year: 'numeric' });
  const d = new Date(instant).toLocaleDateString('en-US', opts);
  return year(instant) === year(nowIso) ? d : d + ', ' + year(instant);
};
const text = async (page, sel) => (await page.locator(sel).innerText()).trim();

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  // launch() gives every run a fresh temporary user-data dir of its own.
});

/** axe finds no serious or critical violation; no horizontal scroll at 375 px; screenshots. */
async function inspect(page, name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => await window.axe.run(document));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, name + ': axe: ' + JSON.stringify(bad.map((v) => [v.id, v.nodes.map((n) => n.target)])));
  await page.screenshot({ path: join(SHOTS, name + '-desktop.png'), fullPage: true });
  const size = page.viewportSize();
  await page.setViewportSize({ width: 375, height: 800 });
  const scroll = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(scroll <= 0, name + ': horizontal scroll of ' + scroll + ' px at 375 px');
  await page.screenshot({ path: join(SHOTS, name + '-phone.png'), fullPage: true });
  await page.setViewportSize(size);
}

async function signIn(context, token) {
  const page = await context.newPage();
  await page.goto(BASE + '/');
  await inspect(page, 'sign-in');
  await page.fill('#sign-in input[name=token]', token);
  await page.click('#sign-in button[type=submit]');
  return page;
}

try {
  // --- A merchant: the Credits page against the API's balance.
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 }, acceptDownloads: true });
  const page = await signIn(ctx, TOKEN);
  check(page.url() === BASE + '/a/' + ACCOUNT, 'lands on its Credits page: ' + page.url());
  const b = await api('GET', `/v1/accounts/${ACCOUNT}/balance`);
  const account = await api('GET', `/v1/accounts/${ACCOUNT}`);
  const zone = account.time_zone;
  check(await text(page, '#free-remaining') === fmt(b.free.remaining), 'free remaining');
  check(await text(page, '#free-allowance') === fmt(b.free.allowance), 'free allowance');
  check(await text(page, '#free-used') === fmt(b.free.used), 'free used');
  check(await text(page, '#paid-remaining') === fmt(b.paid.remaining), 'paid remaining');
  check(await text(page, '#held') === fmt(b.held), 'held');
  check(await text(page, '#available') === fmt(b.available), 'available');
  const resets = shortDay(b.free.resets_at, zone, b.as_of);
  check(await text(page, '#free-resets') === resets, 'resets on ' + resets);
  check(await page.locator('#as-of').getAttribute('datetime') === b.as_of, 'as of (test clock)');
  const asOf = new Date(b.as_of).toLocaleTimeString('en-GB', { timeZone: zone, hour12: false });
  check(await text(page, '#as-of') === asOf, 'as of ' + asOf);
  const billsOn = shortDay(b.unbilled.bills_on + 'T12:00:00Z', 'UTC', new Date(b.as_of).toLocaleDateString('en-CA', { timeZone: zone }) + 'T12:00:00Z');
  const charge = await text(page, '#next-charge');
  check(charge.startsWith(`Next charge: $${Number(b.unbilled.amount).toLocaleString('en-US', { minimumFractionDigits: 2 })} on ${billsOn} (${fmt(b.unbilled.credits)} credits bought`), 'next charge: ' + charge);
  check(/^(At this rate your free credits|Your free credits are used up until they reset on )/.test(await text(page, '#forecast')), 'forecast');
  // The auto-recharge and alert settings, in words.
  const r = account.auto_recharge;
  check(r !== null, 'the test account auto-recharges');
  const recharge = await text(page, '#auto-recharge');
  check(recharge.startsWith(`On: ${fmt(r.credits)} credits ($${(r.credits / 100).toFixed(2)}) are bought when fewer than ${fmt(r.threshold)} are available`), 'auto-recharge: ' + recharge);
  check(await text(page, '#low-balance-alert') === `When fewer than ${fmt(account.low_balance_threshold)} credits are available.`, 'low balance alert');
  await inspect(page, 'credits');

  // --- Will 2,500 texts go out? Against POST .../quote.
  const q = await api('POST', `/v1/accounts/${ACCOUNT}/quote`, { credits: 2500 });
  await page.fill('#quote-form input[name=credits]', '2500');
  await page.click('#quote-form button[type=submit]');
  const answer = await text(page, '#quote-answer');
  if (q.covered) check(answer.startsWith('Yes: 2,500 texts'), 'quote covered: ' + answer);
  if (q.auto_recharge_credits > 0) check(answer.endsWith(`after auto-recharge buys ${fmt(q.auto_recharge_credits)} credits.`), 'quote with a recharge: ' + answer);
  else check(answer.includes(`short by ${fmt(q.shortfall)} credits = $${q.shortfall_amount}`), 'quote short: ' + answer);

  // --- Buy 500 through the dialog, double-clicking confirm: one purchase.
  const beforeIds = (await api('GET', `/v1/accounts/${ACCOUNT}/purchases?limit=500`)).data.map((p) => p.id);
  const before = beforeIds.length;
  await page.click('#purchase-open');
  await page.fill('#purchase-form input[name=credits]', '500');
  check((await text(page, '#purchase-price')) === `500 credits x $0.01 = $5.00, billed on ${billsOn}`, 'live price: ' + await text(page, '#purchase-price'));
  await inspect(page, 'purchase');
  await page.click('#purchase-form button[type=submit]');
  await inspect(page, 'purchase-confirm');
  await page.dblclick('#purchase-confirm');
  // The second click's submission may abort the first's navigation
  // (net::ERR_ABORTED): wait for the one that lands.
  const landed = BASE + `/a/${ACCOUNT}/purchases`;
  await page.waitForURL(landed).catch(async (e) => {
    if (!String(e).includes('ERR_ABORTED')) throw e;
    await page.waitForURL(landed);
  });
  const after = (await api('GET', `/v1/accounts/${ACCOUNT}/purchases?limit=500`)).data;
  check(after.length === before + 1, `exactly one purchase: ${before} -> ${after.length}`);
  // The test clock stands still, so purchases may share an instant: find the new one by id.
  const bought = after.find((p) => !beforeIds.includes(p.id));
  check(bought.credits === 500, 'the purchase is of 500');
  check((await text(page, '#flash')).startsWith('Bought 500 credits for $5.00'), 'flash');
  const row = page.locator(`#purchases tr[data-purchase-id="${bought.id}"]`);
  check((await row.innerText()).includes('Unbilled, bills on ' + billsOn), 'history row with its billing date');
  // The automatic purchase says so; one bought by request says so too.
  const auto = after.find((p) => p.automatic);
  check(auto !== undefined, 'the hold bought credits on its own');
  check((await text(page, `#purchases tr[data-purchase-id="${auto.id}"] td.kind`)) === 'Auto-recharge', 'automatic purchase row');
  check((await text(page, `#purchases tr[data-purchase-id="${bought.id}"] td.kind`)) === 'One-time', 'purchase by request row');
  await inspect(page, 'purchases');

  // --- The CSV.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#purchases-csv')]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
  check(csv[0] === 'id,account_id,purchased_at,credits,unit_price,amount,currency,status,bills_on,statement_id,refunded_credits,automatic', 'csv header');
  check(csv.length === after.length + 1, 'one csv row per purchase');
  check(csv.includes(`${bought.id},${bought.account_id},${bought.purchased_at},500,0.01,5.00,USD,unbilled,${bought.bills_on},,0,false`), 'csv row of the purchase: ' + csv.join(' | '));

  // --- Past the purchase limit: the message, nothing bought.
  await api('PATCH', `/v1/accounts/${ACCOUNT}`, { monthly_purchase_limit: 2000 });
  await page.goto(BASE + `/a/${ACCOUNT}/buy?credits=5000`);
  await page.click('#purchase-form button[type=submit]');
  await page.click('#purchase-confirm');
  check((await text(page, '#flash')).includes('purchase limit'), 'limit message: ' + await text(page, '#flash'));
  check((await api('GET', `/v1/accounts/${ACCOUNT}/purchases?limit=500`)).data.length === after.length, 'nothing bought past the limit');
  // Bad quantities: a message, nothing bought.
  await page.goto(BASE + `/a/${ACCOUNT}/buy`);
  await page.fill('#purchase-form input[name=credits]', '-3');
  await page.click('#purchase-form button[type=submit]');
  check((await text(page, '#flash')).includes('Nothing was bought'), 'bad quantity message');

  // --- Statements page.
  await page.goto(BASE + `/a/${ACCOUNT}/statements`);
  check(await page.locator('#statements').count() === 1, 'statements page');
  await inspect(page, 'statements');

  // --- Another account's pages, forms and CSV: not found, whatever the URL.
  for (const path of [`/a/${OTHER}`, `/a/${OTHER}/purchases`, `/a/${OTHER}/purchases.csv`, `/a/${OTHER}/statements`, `/a/${OTHER}/buy`, '/accounts']) {
    const r = await page.goto(BASE + path);
    check(r.status() === 404 || r.status() === 403, path + ' answers ' + r.status());
  }
  // A form to another account, with this session's CSRF token: refused, nothing bought.
  const csrf = await page.goto(BASE + `/a/${ACCOUNT}`).then(() => page.locator('#sign-out input[name=csrf]').getAttribute('value'));
  const otherBefore = (await api('GET', `/v1/accounts/${OTHER}/purchases`)).data.length;
  const cross = await ctx.request.post(BASE + `/a/${OTHER}/buy/confirm`, { form: { csrf, credits: '10', key: 'x-1' } });
  check(cross.status() === 404, 'another account\'s form answers ' + cross.status());
  // A form without its CSRF token: 403, nothing bought.
  const mine = (await api('GET', `/v1/accounts/${ACCOUNT}/purchases?limit=500`)).data.length;
  const forged = await ctx.request.post(BASE + `/a/${ACCOUNT}/buy/confirm`, { form: { credits: '10', key: 'x-2' } });
  check(forged.status() === 403, 'no CSRF token: ' + forged.status());
  const noOut = await ctx.request.post(BASE + '/sign-out', { form: {} });
  check(noOut.status() === 403, 'sign-out without CSRF: ' + noOut.status());
  check((await api('GET', `/v1/accounts/${ACCOUNT}/purchases?limit=500`)).data.length === mine, 'forged form bought nothing');
  check((await api('GET', `/v1/accounts/${OTHER}/purchases`)).data.length === otherBefore, 'nothing bought on the other account');

  // --- Sign out: the pages are closed.
  await page.goto(BASE + `/a/${ACCOUNT}`);
  await page.click('#sign-out button');
  await page.waitForURL(/\/\?signed_out=1$/);
  await page.goto(BASE + `/a/${ACCOUNT}/purchases`);
  check(page.url() === BASE + '/', 'signed out: back to sign-in, got ' + page.url());
  await ctx.close();

  // --- The admin finds an account by search and sees its page.
  const actx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const admin = await signIn(actx, ADMIN);
  check(admin.url() === BASE + '/accounts', 'admin lands on accounts');
  await admin.fill('input[name=q]', OTHER.slice(0, 5));
  await admin.click('#accounts-search button');
  check(await admin.locator(`#accounts tr[data-account-id="${OTHER}"]`).count() === 1, 'search finds the account');
  await inspect(admin, 'accounts');
  await admin.click(`#accounts a[href="/a/${OTHER}"]`);
  check(admin.url() === BASE + '/a/' + OTHER, 'admin opens its page');
  check(await admin.locator('#closed').count() === 0, 'an open account shows no closed notice');
  await admin.goto(BASE + `/a/${CLOSED}`);
  check((await text(admin, '#closed')).startsWith('This account is closed'), 'a closed account says so');
  await inspect(admin, 'closed-account');
  // Its purchase dialog says why, and nothing is bought.
  await admin.goto(BASE + `/a/${CLOSED}/buy?credits=500`);
  await admin.click('#purchase-form button[type=submit]');
  await admin.click('#purchase-confirm');
  check((await text(admin, '#flash')).includes('This account is closed'), 'closed message: ' + await text(admin, '#flash'));
  check((await api('GET', `/v1/accounts/${CLOSED}/purchases`)).data.length === 0, 'nothing bought on a closed account');
  await admin.goto(BASE + '/statements');
  await inspect(admin, 'month-statements');
  await actx.close();

  // --- Revoking a token ends its sessions, from the next page on.
  const rctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const made = await api('POST', `/v1/accounts/${OTHER}/tokens`, { label: 'to revoke' });
  const merchant = await signIn(rctx, made.token);
  check(merchant.url() === BASE + `/a/${OTHER}`, 'signed in with the new token');
  check((await api('DELETE', `/v1/accounts/${OTHER}/tokens/${made.id}`)) === null, 'revoked');
  await merchant.goto(BASE + `/a/${OTHER}/purchases`);
  check(merchant.url() === BASE + '/', 'a revoked token\'s session is over: ' + merchant.url());
  await rctx.close();
  console.log('dashboard browser test: all checks passed');
} finally {
  await browser.close();
}
