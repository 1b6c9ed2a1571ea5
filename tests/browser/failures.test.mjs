// When checkout cannot go through, and when a service is down: the page says what happened and
// the cart is kept. The catalog is killed in the last test (this file has a shop of its own).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  addToCart, adminToken, api, fillCheckout, openProduct, register, shotsDir, shopAndBrowser,
} from './shop.mjs';

const running = shopAndBrowser();


/** A signed-in shopper's page, screenshotting into its own folder. */
async function shopper(folder) {
  const context = await running.browser.newContext();
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const dir = shotsDir(folder);
  let n = 0;
  page.shot = (label) => page.screenshot({ path: join(dir, `${String(++n).padStart(2, '0')}-${label}.png`), fullPage: true });
  await register(page, running.shop.url);
  return page;
}

/** Sends the filled checkout form; returns the status of the page it answers with. */
async function placeOrder(page) {
  const answer = page.waitForResponse((r) => r.request().method() === 'POST' && r.request().isNavigationRequest());
  await page.getByRole('button', { name: 'Place order' }).click();
  const response = await answer;
  await page.waitForLoadState('load');
  return response.status();
}

async function assertCartHolds(page, product) {
  await page.goto(`${running.shop.url}/cart`);
  await page.getByRole('main').getByRole('link', { name: product, exact: true }).waitFor();
}

test('a declined card: the checkout page says "declined", the address and the cart are kept', async () => {
  const page = await shopper('declined');
  await openProduct(page, running.shop.url, 'Compact Teapot');
  await addToCart(page);
  await page.goto(`${running.shop.url}/checkout`);
  const typed = await fillCheckout(page, '4000000000000002');
  assert.equal(await placeOrder(page), 402);
  await page.shot('checkout-declined');
  assert.match(await page.getByRole('alert').first().innerText(), /declined/i);
  assert.equal(await page.getByLabel('Full name', { exact: true }).inputValue(), typed['Full name']);
  assert.equal(await page.getByLabel('Address', { exact: true }).inputValue(), typed.Address);
  await assertCartHolds(page, 'Compact Teapot');
  await page.shot('cart-kept');
  await page.context().close();
});

test('stock gone before checkout: "no longer in stock", the cart is kept', async () => {
  const page = await shopper('stock-gone');
  const id = await openProduct(page, running.shop.url, 'Everyday Whisk');
  await addToCart(page, 2);
  // Meanwhile the shop sells all but one: an admin corrects the units on hand.
  await api(running.shop.url, 'PUT', `/api/stock/${id}`, { on_hand: 1 }, await adminToken(running.shop.url));
  await page.goto(`${running.shop.url}/product/${id}`);
  await page.getByRole('main').getByText('Only 1 left').waitFor();
  await page.goto(`${running.shop.url}/checkout`);
  await fillCheckout(page, '4242424242424242');
  assert.equal(await placeOrder(page), 409);
  await page.shot('checkout-stock-gone');
  assert.match(await page.getByRole('alert').first().innerText(), /no longer in stock/i);
  await assertCartHolds(page, 'Everyday Whisk');
  await page.shot('cart-kept');
  await page.context().close();
});

test('the catalog killed mid-session: its pages answer 503 at once, the cart still renders', async () => {
  const page = await shopper('catalog-down');
  const id = await openProduct(page, running.shop.url, 'Classic Lantern');
  await addToCart(page);

  await running.shop.kill('catalog'); // SIGKILL: no goodbye, as in a crash
  for (const path of [`/product/${id}`, '/search?q=kettle']) {
    const started = Date.now();
    const response = await page.goto(`${running.shop.url}${path}`);
    const took = Date.now() - started;
    console.log(`# ${path} with the catalog down: ${response.status()} in ${took} ms (page loaded)`);
    assert.equal(response.status(), 503, path);
    await page.getByRole('heading', { level: 1, name: 'Temporarily unavailable' }).waitFor();
    assert.ok(took < 1000, `${path} took ${took} ms`);
  }
  await page.shot('product-unavailable');

  // The cart holds names and prices of its own: it renders without the catalog.
  const cart = await page.goto(`${running.shop.url}/cart`);
  assert.equal(cart.status(), 200);
  await page.getByRole('heading', { level: 1, name: 'Your cart' }).waitFor();
  await page.getByRole('main').getByRole('link', { name: 'Classic Lantern', exact: true }).waitFor();
  await page.shot('cart-without-catalog');
  await page.context().close();
});
