// The golden journey through the storefront, as a new person would take it: browse, search, add
// to a guest cart, register (the cart follows), check out, see the order and the inbox. Twice:
// with JavaScript and without. Every page is screenshotted, scanned by axe-core (JavaScript on),
// weighed, and every request is checked to stay on the shop's origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  axeViolations, fillCheckout, formatViolations, nav, record, shotsDir, submitRegistration,
  shopAndBrowser, uncachedPage,
} from './shop.mjs';

const KB = 1024;
const running = shopAndBrowser();


// What each journey saw, for the checks after it (filled as it goes, so a journey that fails
// halfway still has its pages checked).
const journeys = {};

/** Waits for `locator` to be visible; fails with `what` instead of a bare timeout. */
async function see(locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible' });
  } catch {
    assert.fail(`not on the page: ${what}`);
  }
}

async function journey({ javaScriptEnabled, product }) {
  const name = javaScriptEnabled ? 'journey' : 'journey-no-js';
  const dir = shotsDir(name);
  console.log(`# screenshots of the ${name}: ${dir}`);
  const context = await running.browser.newContext({ javaScriptEnabled, viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  const rec = record(context);
  const seen = { rec, pages: [] };
  journeys[name] = seen;
  const page = await uncachedPage(context);
  const main = page.getByRole('main');
  const url = running.shop.url;

  // Each page of the journey: a screenshot, its weight, and (JavaScript on) an axe scan.
  const checkpoint = async (label) => {
    await page.waitForLoadState('networkidle', { timeout: 5_000 }).catch(() => {});
    const n = String(seen.pages.length + 1).padStart(2, '0');
    await page.screenshot({ path: join(dir, `${n}-${label}.png`), fullPage: true });
    seen.pages.push({
      label,
      path: new URL(page.url()).pathname,
      weight: await rec.lastPageWeight(),
      violations: javaScriptEnabled ? await axeViolations(page) : [],
    });
  };

  try {
    // Home: categories and featured products, every landmark.
    const home = await page.goto(`${url}/`);
    assert.equal(home.status(), 200);
    await see(page.getByRole('heading', { level: 1, name: 'Welcome to shop' }), 'h1 "Welcome to shop"');
    for (const landmark of ['banner', 'main', 'contentinfo']) await see(page.getByRole(landmark), landmark);
    await see(nav(page), 'nav "Main"');
    await see(page.getByRole('heading', { level: 2, name: 'Categories' }), 'h2 "Categories"');
    await see(page.getByRole('heading', { level: 2, name: 'Featured' }), 'h2 "Featured"');
    await see(main.getByRole('article'), 'a product card');
    await checkpoint('home');

    // A category page.
    await main.getByRole('link', { name: 'Kitchen', exact: true }).click();
    await page.waitForURL(/\/category\/kitchen/);
    await see(page.getByRole('heading', { level: 1, name: 'Kitchen' }), 'h1 "Kitchen"');
    await see(main.getByRole('article'), 'a product card');
    await checkpoint('category');

    // Search from the header.
    const search = page.getByRole('search');
    await search.getByLabel('Search products').fill('kettle');
    await search.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/\/search\?q=kettle/);
    await see(page.getByRole('heading', { level: 1, name: 'Search results for “kettle”' }), 'the search h1');
    await checkpoint('search');

    // The product page: picture (loaded), price, stock, quantity.
    await main.getByRole('link', { name: product, exact: true }).first().click();
    await page.waitForURL(/\/product\//);
    await see(page.getByRole('heading', { level: 1, name: product }), `h1 "${product}"`);
    const picture = main.locator('img').first();
    assert.ok(await picture.getAttribute('alt'), 'the picture has alt text');
    if (javaScriptEnabled) {
      assert.ok(await picture.evaluate((img) => img.complete && img.naturalWidth > 0), 'the picture loads');
    }
    await see(main.getByText(/\d+\.\d\d/), 'a price');
    await see(main.getByText('In stock'), '"In stock"');
    assert.equal(await page.getByLabel('Quantity', { exact: true }).inputValue(), '1');
    await checkpoint('product');

    // Into the guest cart.
    await page.getByRole('button', { name: 'Add to cart' }).click();
    await page.waitForURL(/\/cart(\?|$)/);
    await see(page.getByRole('heading', { level: 1, name: 'Your cart' }), 'h1 "Your cart"');
    await see(main.getByRole('link', { name: product, exact: true }), `${product} in the cart`);
    assert.equal(await page.getByLabel(`Quantity of ${product}`).inputValue(), '1');
    await see(main.getByText(/Total: /), 'the total');
    await see(main.getByRole('link', { name: 'Sign in to check out' }), 'link "Sign in to check out"');
    await checkpoint('cart-guest');

    // Register: signed in, and the guest cart is now the account's.
    await nav(page).getByRole('link', { name: 'Register' }).click();
    await page.waitForURL(/\/register/);
    await checkpoint('register');
    await submitRegistration(page);
    await see(page.getByRole('button', { name: 'Sign out' }), 'button "Sign out"');
    await nav(page).getByRole('link', { name: /^Cart/ }).click();
    await page.waitForURL(/\/cart(\?|$)/);
    await see(main.getByRole('link', { name: product, exact: true }), `${product} still in the cart after registering`);
    assert.equal(await page.getByLabel(`Quantity of ${product}`).inputValue(), '1');
    await checkpoint('cart-merged');

    // Checkout with the good test card.
    await main.getByRole('link', { name: 'Checkout', exact: true }).click();
    await page.waitForURL(/\/checkout$/);
    await see(page.getByRole('heading', { level: 1, name: 'Checkout' }), 'h1 "Checkout"');
    await see(page.getByRole('heading', { level: 2, name: 'Test cards' }), 'h2 "Test cards"');
    await see(main.getByText('4242424242424242'), 'the good test card listed');
    await fillCheckout(page, '4242424242424242');
    await checkpoint('checkout');
    await page.getByRole('button', { name: 'Place order' }).click();
    await page.waitForURL(/\/orders\/[^/?]+\?placed=1$/, { timeout: 30_000 });

    // The confirmation: the order page with its status and tracking number.
    await see(page.getByRole('status').filter({ hasText: 'Thank you! Your order is confirmed.' }), 'the confirmation');
    await see(page.getByRole('heading', { level: 1, name: /^Order/ }), 'h1 "Order …"');
    assert.equal((await main.locator('.order-status').first().innerText()).trim(), 'CONFIRMED');
    const tracking = (await main.locator('.tracking-number').first().innerText()).trim();
    assert.ok(tracking, 'a tracking number');
    const trackingLink = main.locator('a[href*="/track?number="]');
    await see(trackingLink, 'a link to /track?number=…');
    await see(page.getByRole('heading', { level: 2, name: 'Progress' }), 'h2 "Progress"');
    await see(page.getByRole('heading', { level: 2, name: 'Shipment' }), 'h2 "Shipment"');
    const orderPath = new URL(page.url()).pathname;
    await checkpoint('order');

    // The order history links to it.
    await nav(page).getByRole('link', { name: 'Orders' }).click();
    await page.waitForURL(/\/orders$/);
    await see(page.getByRole('heading', { level: 1, name: 'Your orders' }), 'h1 "Your orders"');
    await see(main.locator(`a[href$="${orderPath}"]`), `a link to ${orderPath}`);
    await checkpoint('orders');

    // The inbox: the messages arrive by events, so reload a few seconds until they are there.
    await nav(page).getByRole('link', { name: 'Inbox' }).click();
    await page.waitForURL(/\/inbox$/);
    await see(page.getByRole('heading', { level: 1, name: 'Inbox' }), 'h1 "Inbox"');
    const subjects = () => main.getByRole('article').getByRole('heading').allInnerTexts();
    const deadline = Date.now() + 10_000;
    while (!(await subjects()).some((s) => /confirmed/i.test(s)) && Date.now() < deadline) {
      await page.waitForTimeout(500);
      await page.reload();
    }
    const inbox = await subjects();
    assert.ok(inbox.some((s) => /welcome/i.test(s)), `a welcome message in ${JSON.stringify(inbox)}`);
    assert.ok(inbox.some((s) => /confirmed/i.test(s)), `an order confirmation in ${JSON.stringify(inbox)}`);
    await checkpoint('inbox');

    // The parcel's page, from the order's tracking link.
    await page.goto(`${url}${orderPath}`);
    await trackingLink.first().click();
    await page.waitForURL(/\/track\?number=/);
    await see(main.getByText(tracking), 'the tracking number on /track');
    await see(page.getByLabel('Tracking number'), 'input "Tracking number"');
    await checkpoint('track');
  } finally {
    await context.close();
  }
}

test('the golden journey', async () => {
  await journey({ javaScriptEnabled: true, product: 'Deluxe Kettle' });
});

test('the golden journey with JavaScript disabled', async () => {
  await journey({ javaScriptEnabled: false, product: 'Classic Kettle' });
});

test('axe-core finds no WCAG 2 A/AA violation on any page of the journey', () => {
  const pages = journeys.journey?.pages ?? [];
  assert.ok(pages.length > 0, 'the journey reached no page');
  const report = pages.filter((p) => p.violations.length > 0)
    .map((p) => formatViolations(`${p.label} (${p.path})`, p.violations));
  console.log(`# axe scanned ${pages.length} pages: ${pages.map((p) => p.label).join(', ')}`);
  assert.equal(report.length, 0, `violations:\n${report.join('\n')}`);
});

test('no request leaves the shop\'s origin; no Content Security Policy errors', () => {
  const origin = new URL(running.shop.url).origin;
  for (const [name, { rec }] of Object.entries(journeys)) {
    // data: URLs never leave the page; anything else must go to the gateway.
    const away = rec.requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
    assert.deepEqual(away, [], `${name}: requests to other origins`);
    const csp = rec.consoleErrors.filter((e) => /Content.Security.Policy/i.test(e));
    assert.deepEqual(csp, [], `${name}: CSP errors in the console`);
    console.log(`# ${name}: ${rec.requests.length} requests, all to ${origin}`);
  }
});

test('page weight: ≤ 50 KB without pictures, the home page ≤ 350 KB with them', () => {
  const pages = journeys.journey?.pages ?? [];
  assert.ok(pages.length > 0, 'the journey reached no page');
  const kb = (n) => (n / KB).toFixed(1).padStart(8);
  console.log('# page           HTML+CSS+JS KB   images KB   (transferred, first visit)');
  for (const p of pages) console.log(`# ${p.label.padEnd(14)} ${kb(p.weight.page)}        ${kb(p.weight.images)}`);
  for (const p of pages) {
    assert.ok(p.weight.page > 0, `${p.label}: nothing measured`);
    assert.ok(p.weight.page <= 50 * KB, `${p.label}: ${kb(p.weight.page)} KB without pictures`);
  }
  const home = pages.find((p) => p.label === 'home');
  assert.ok(home.weight.page + home.weight.images <= 350 * KB, `home with pictures: ${kb(home.weight.page + home.weight.images)} KB`);
});

test('every picture the catalog API names loads through the gateway', async () => {
  const urls = new Set();
  for (let cursor = ''; ;) {
    const page = await (await fetch(`${running.shop.url}/api/products?limit=100${cursor && `&cursor=${cursor}`}`)).json();
    for (const p of page.items) urls.add(p.image_url);
    if (!page.next_cursor) break;
    cursor = encodeURIComponent(page.next_cursor);
  }
  const page = await running.browser.newPage();
  const broken = [];
  for (const path of urls) {
    const response = await page.goto(new URL(path, running.shop.url).href);
    const type = response.headers()['content-type'] ?? '';
    if (response.status() !== 200 || !type.startsWith('image/')) broken.push(`${path}: ${response.status()} ${type}`);
  }
  await page.close();
  console.log(`# ${urls.size} distinct pictures`);
  assert.deepEqual(broken, [], 'pictures that do not load');
});
