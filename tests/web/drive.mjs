// Drives the web view of a running `memory serve` in a real headless Chromium, as a user
// would: opens it with the token, searches, opens an episode, asks for advice, retracts a
// pattern and sees it gone from the advice, pins another and sees it advised first, forgets an episode and sees it gone from search,
// advice and the counts, and draws the learning curve. Screenshots go to the given folder.
//
// Usage: node drive.mjs <base-url> <token> <screenshot-dir> <search-words> <episode-id> <task>
//        <domain> <language>
// with MEMORY_BROWSER_DIR naming where scripts/install-browser.sh put the packages.
// Prints one JSON line last: {"ok": true, ...} or {"ok": false, "error": ..., "console": [...]}.
// Any console error, page error or failed request of the page fails the run.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [base, token, shots, words, forgetId, task, domain, language] = process.argv.slice(2);
const modules = process.env.MEMORY_BROWSER_DIR;
if (!base || !token || !shots || !words || !forgetId || !task || !domain || !language || !modules) {
  console.log(JSON.stringify({ ok: false, error: 'usage: see the header of drive.mjs' }));
  process.exit(2);
}
const require = createRequire(join(modules, 'node_modules', 'drive.cjs'));
const load = async (name) => (await import(pathToFileURL(require.resolve(name)).href)).default;
const chromium = await load('@sparticuz/chromium');
const puppeteer = await load('puppeteer-core');

mkdirSync(shots, { recursive: true });
const problems = [];
const steps = {};
const screenshots = [];

const browser = await puppeteer.launch({
  executablePath: await chromium.executablePath(),
  headless: true,
  args: [
    ...chromium.args,
    // This machine's network is closed: no background connections to try.
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
  defaultViewport: { width: 1280, height: 900 },
});

async function run() {
  const page = await browser.newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push('console: ' + m.text());
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('requestfailed', (r) => problems.push('request failed: ' + r.url() + ' ' + (r.failure()?.errorText ?? '')));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });

  const shot = async (name) => {
    const path = join(shots, name + '.png');
    await page.screenshot({ path, fullPage: true });
    screenshots.push(path);
  };
  const ready = () => page.waitForSelector('body[data-ready="true"]');
  const idle = () => page.waitForNetworkIdle({ idleTime: 150 });
  const episodesShown = () => page.$$eval('#episodes tr[data-id]', (rows) => rows.map((r) => r.dataset.id));
  const counted = async () => Number(await page.$eval('#counts', (c) => c.dataset.episodes));
  const tab = async (name) => {
    await page.click(`nav button[data-tab="${name}"]`);
    await idle();
  };
  const search = async (text) => {
    await tab('episodes');
    await page.$eval('#search', (i) => { i.value = ''; });
    await page.type('#search', text);
    await page.click('#search-form button[type="submit"]');
    await idle();
    return episodesShown();
  };
  const advise = async (text) => {
    await tab('advise');
    await page.$eval('#task', (t) => { t.value = ''; });
    await page.type('#task', text);
    for (const [field, value] of [['#advise-domain', domain], ['#advise-language', language]]) {
      await page.$eval(field, (i) => { i.value = ''; });
      await page.type(field, value);
    }
    await page.click('#advise-form button[type="submit"]');
    await page.waitForSelector('#advice .advice');
    await idle();
    return page.$$eval('#advice .advice-section', (sections) => Object.fromEntries(sections.map((s) => [
      s.querySelector('h3').textContent,
      [...s.querySelectorAll('.item')].map((i) => i.dataset.id),
    ])));
  };

  // Opened with the token, the page drops it from the address (a cookie session instead).
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  await ready();
  await idle();
  steps.address_after_login = page.url();
  if (page.url().includes('token')) throw new Error('the token stayed in the address: ' + page.url());
  steps.namespaces = await page.$$eval('#namespace option', (os) => os.map((o) => o.value));
  steps.episodes_before = await counted();
  await shot('1-episodes');

  // Search, then open the episode it found.
  const found = await search(words);
  steps.search_found = found.length;
  if (!found.includes(forgetId)) throw new Error(`search for ${words} did not find ${forgetId}: ${found}`);
  await shot('2-search');
  await page.click(`#episodes tr[data-id="${forgetId}"]`);
  await page.waitForSelector('#episode:not([hidden]) #episode-steps tr');
  steps.opened_steps = (await page.$$('#episode-steps tr')).length;
  await shot('3-episode');

  // Advice lists a pattern; retracted, it is gone from the advice.
  const before = await advise(task);
  const patterns = before.Patterns ?? [];
  steps.advice_patterns_before = patterns.length;
  if (!patterns.length) throw new Error('the advice lists no pattern: ' + JSON.stringify(before));
  await shot('4-advice');
  const retracted = patterns[0];
  await tab('learned');
  await page.waitForSelector(`#learned .item[data-id="${retracted}"]`);
  await shot('5-learned');
  await page.type(`#learned .item[data-id="${retracted}"] input.reason`, 'wrong for this team');
  await page.click(`#learned .item[data-id="${retracted}"] button.retract`);
  await page.waitForFunction((id) => !document.querySelector(`#learned .item[data-id="${id}"]`), {}, retracted);
  await idle();
  steps.retracted = retracted;
  const after = await advise(task);
  steps.advice_patterns_after = (after.Patterns ?? []).length;
  if ((after.Patterns ?? []).includes(retracted)) throw new Error(`the retracted pattern ${retracted} is still advised`);
  await shot('6-advice-after-retract');
  await tab('learned');
  await page.click('#inactive');
  await page.waitForSelector(`#learned .item[data-id="${retracted}"][data-status="retracted"]`);
  await shot('7-learned-retracted');
  await page.click('#inactive');
  await idle();

  // Pinned, the last advised pattern is advised first, labeled pinned.
  const pinned = (after.Patterns ?? []).at(-1);
  if (!pinned) throw new Error('no pattern left to pin');
  await page.waitForSelector(`#learned .item[data-id="${pinned}"] button.pin`);
  await page.type(`#learned .item[data-id="${pinned}"] input.reason`, 'the team agreed on it');
  await page.click(`#learned .item[data-id="${pinned}"] button.pin`);
  await page.waitForSelector(`#learned .item.pinned[data-id="${pinned}"]`);
  await idle();
  const withPin = await advise(task);
  steps.pinned = pinned;
  if ((withPin.Patterns ?? [])[0] !== pinned) {
    throw new Error(`the pinned pattern ${pinned} is not advised first: ${JSON.stringify(withPin.Patterns)}`);
  }
  const label = await page.$eval(`#advice .item.pinned[data-id="${pinned}"] .badge.pin`, (b) => b.textContent);
  if (!label.includes('pinned')) throw new Error('the advised pin is not labeled: ' + label);
  await shot('11-pinned-first');

  // The episode was among the similar ones; forgotten, it is gone from search, advice and counts.
  if (!(before['Similar episodes'] ?? []).includes(forgetId)) {
    throw new Error(`the advice did not list ${forgetId} among similar episodes`);
  }
  await search(words);
  await page.click(`#episodes tr[data-id="${forgetId}"]`);
  await page.waitForSelector('#episode:not([hidden])');
  await page.type('#forget-reason', 'recorded by mistake');
  await page.click('#forget');
  await page.waitForSelector('#episode[hidden]');
  await idle();
  steps.notice = await page.$eval('#notice', (n) => n.textContent);
  steps.episodes_after = await counted();
  if (steps.episodes_after !== steps.episodes_before - 1) {
    throw new Error(`counts: ${steps.episodes_before} before, ${steps.episodes_after} after forgetting one`);
  }
  const again = await search(words);
  if (again.includes(forgetId)) throw new Error('search still finds the forgotten episode');
  steps.search_found_after = again.length;
  await shot('8-forgotten');
  const advisedAfter = await advise(task);
  if ((advisedAfter['Similar episodes'] ?? []).includes(forgetId)) throw new Error('the advice still lists the forgotten episode');
  steps.similar_after = (advisedAfter['Similar episodes'] ?? []).length;
  await shot('9-advice-after-forget');

  // The learning curve.
  await tab('curve');
  await page.waitForSelector('#curve svg circle');
  steps.curve_points = (await page.$$('#curve svg circle.rate-dot')).length;
  if (!steps.curve_points) throw new Error('the curve has no success-rate point');
  await shot('10-curve');
  await page.close();
}

let result;
try {
  await run();
  result = problems.length
    ? { ok: false, error: 'the page reported errors', console: problems, steps, screenshots }
    : { ok: true, steps, screenshots };
} catch (e) {
  result = { ok: false, error: String(e && e.stack ? e.stack : e), console: problems, steps, screenshots };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
