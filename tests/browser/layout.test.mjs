// Usable on a small phone and by keyboard alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openProduct, shotsDir, shopAndBrowser } from './shop.mjs';

const running = shopAndBrowser();


test('at 320 px wide the home and product pages do not scroll sideways', async () => {
  const context = await running.browser.newContext({ viewport: { width: 320, height: 640 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const dir = shotsDir('narrow');
  const width = () => page.evaluate(() => document.documentElement.scrollWidth);

  await page.goto(`${running.shop.url}/`);
  await page.screenshot({ path: join(dir, '01-home.png'), fullPage: true });
  assert.ok(await width() <= 320, `home is ${await width()} px wide`);

  await openProduct(page, running.shop.url, 'Deluxe Kettle');
  await page.screenshot({ path: join(dir, '02-product.png'), fullPage: true });
  assert.ok(await width() <= 320, `the product page is ${await width()} px wide`);
  await context.close();
});

test('by keyboard: Tab reaches the search box and a product link, focus is visible', async () => {
  const page = await running.browser.newPage();
  await page.goto(`${running.shop.url}/`);
  const reached = { search: false, product: false };
  const unseen = [];
  for (let i = 0; i < 60 && !(reached.search && reached.product); i++) {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return {
        what: `${el.tagName.toLowerCase()} ${el.getAttribute('name') ?? el.getAttribute('href') ?? ''}`,
        search: el.tagName === 'INPUT' && el.getAttribute('name') === 'q',
        product: el.tagName === 'A' && /^\/product\//.test(el.getAttribute('href') ?? ''),
        // A focus ring: an outline, or a box-shadow standing in for one.
        visible: (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== 'none',
      };
    });
    if (!focused.visible) unseen.push(focused.what);
    reached.search ||= focused.search;
    reached.product ||= focused.product;
  }
  assert.ok(reached.search, 'Tab never reached the search box');
  assert.ok(reached.product, 'Tab never reached a product link');
  assert.deepEqual(unseen, [], 'focused without a visible focus indicator');
  await page.close();
});
