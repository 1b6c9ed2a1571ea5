// The harness itself, against the JSON API (no storefront needed): the shop starts, Chromium opens
// it through the gateway, a killed service is seen by `shop up` and the rest keep answering.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, startShop } from './shop.mjs';

let shop;
let browser;
before(async () => {
  [shop, browser] = await Promise.all([startShop(), launchBrowser()]);
});
after(async () => {
  await browser?.close();
  await shop?.stop();
});

test('Chromium reaches the gateway: /healthz and a product from the API', async () => {
  const page = await browser.newPage();
  const health = await page.goto(`${shop.url}/healthz`);
  assert.equal(health.status(), 200);
  assert.match(await page.locator('body').innerText(), /ok/i);

  const products = await page.goto(`${shop.url}/api/products?limit=1`);
  assert.equal(products.status(), 200);
  const body = JSON.parse(await page.locator('body').innerText());
  assert.equal(body.items.length, 1);
  assert.ok(body.items[0].name, 'a product has a name');
  await page.close();
});

test('a killed catalog is reported by shop up; the gateway still answers', async () => {
  assert.ok(shop.pids.catalog > 0, `the catalog's pid parsed from the summary: ${JSON.stringify(shop.pids)}`);
  await shop.kill('catalog');
  const page = await browser.newPage();
  const started = Date.now();
  const products = await page.goto(`${shop.url}/api/products?limit=1`);
  console.log(`# /api/products with the catalog down: ${products.status()} in ${Date.now() - started} ms`);
  assert.ok(products.status() >= 500, `status ${products.status()}`);
  assert.equal((await page.goto(`${shop.url}/healthz`)).status(), 200);
  await page.close();
});
