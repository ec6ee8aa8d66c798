// Browser tests of the My Network page (/_lattice/network/). One Lattice
// server (LATTICE_BIN) runs on 127.0.0.1 with the professional policy and a
// weekly limit of 4 connection requests; Playwright drives Debian's Chromium
// headless. Other users act through the Client-Server API, as their own
// clients would. Screenshots of each screen go to docs/network-page/.
//
// The tests run in order and build on each other's users where noted.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium, firefox } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const LATTICE_BIN = process.env.LATTICE_BIN || path.join(REPO, 'target', 'release', 'lattice');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
const SCREENSHOTS = process.env.SCREENSHOT_DIR || path.join(REPO, 'docs', 'network-page');
const PASSWORD = 'correct horse battery staple';
const WEEKLY_LIMIT = 4;
const ELEMENT_URL = 'https://element.example.test/#/room/';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const CONNECTIONS = '/_matrix/client/unstable/dev.lattice.connections';
const WAIT_MS = 10_000;

let server;
let serverLog;
let base;
let dataDir;
let browser;
const pages = [];

// ---------- the server ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntilReady() {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`lattice exited with code ${server.exitCode}; log in ${serverLog}`);
    try {
      const response = await fetch(`${base}/_matrix/client/versions`);
      if (response.ok) return;
    } catch (_notYet) {
      // The listener is not up yet.
    }
    await sleep(100);
  }
  throw new Error(`lattice did not answer within 30 s; log in ${serverLog}`);
}

before(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'lattice-browser-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const config = [
    'server_name = "localhost"',
    `data_dir = "${dataDir}"`,
    '[listen]',
    `client = "127.0.0.1:${port}"`,
    '[registration]',
    'enabled = true',
    '[rate_limits]',
    'enabled = false',
    '[directory]',
    'search_all_users = true',
    '[policy]',
    'name = "professional"',
    `weekly_connection_request_limit = ${WEEKLY_LIMIT}`,
    '[web]',
    `element_url = "${ELEMENT_URL}"`,
    '',
  ].join('\n');
  const configPath = path.join(dataDir, 'lattice.toml');
  await writeFile(configPath, config);
  serverLog = path.join(dataDir, 'lattice.log');
  const log = createWriteStream(serverLog);
  server = spawn(LATTICE_BIN, ['serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout.pipe(log);
  server.stderr.pipe(log);
  await waitUntilReady();
  await mkdir(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  for (const page of pages) await page.context().close().catch(() => {});
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  if (process.exitCode && serverLog) {
    const log = await readFile(serverLog, 'utf8').catch(() => '(none)');
    // eslint-disable-next-line no-control-regex
    const lines = log.replace(/\x1b\[[0-9;]*m/g, '').trimEnd().split('\n');
    console.error(`last lines of the server log:\n${lines.slice(-40).join('\n')}`);
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

// ---------- users acting through the API ----------

async function api(token, method, apiPath, body, contentType = 'application/json') {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = contentType;
  const response = await fetch(`${base}${apiPath}`, {
    method,
    headers,
    body: contentType === 'application/json' && body !== undefined ? JSON.stringify(body) : body,
  });
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

async function ok(token, method, apiPath, body, contentType) {
  const { status, data } = await api(token, method, apiPath, body, contentType);
  assert.equal(status, 200, `${method} ${apiPath}: ${JSON.stringify(data)}`);
  return data;
}

/** Registers a user with a display name; returns { token, userId, name }. */
async function register(localpart, name) {
  const data = await ok(null, 'POST', '/_matrix/client/v3/register', {
    username: localpart, password: PASSWORD, auth: { type: 'm.login.dummy' },
  });
  const user = { token: data.access_token, userId: data.user_id, name, localpart };
  await ok(user.token, 'PUT', `/_matrix/client/v3/profile/${encodeURIComponent(user.userId)}/displayname`, { displayname: name });
  return user;
}

async function sendRequest(from, to, note) {
  const body = { user_id: to.userId };
  if (note) body.note = note;
  return (await ok(from.token, 'POST', `${CONNECTIONS}/requests`, body)).room_id;
}

async function answer(user, roomId, action) {
  await ok(user.token, 'POST', `${CONNECTIONS}/requests/${encodeURIComponent(roomId)}/${action}`, {});
}

async function connect(a, b) {
  const roomId = await sendRequest(a, b);
  await answer(b, roomId, 'accept');
  return roomId;
}

async function sendText(user, roomId, body) {
  const txn = `t${Date.now()}${Math.random().toString(36).slice(2)}`;
  await ok(user.token, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`, { msgtype: 'm.text', body });
}

// ---------- the page ----------

async function openPage(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, locale: 'en-GB', timezoneId: 'UTC', deviceScaleFactor: 1 });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 40[134]/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  page.problems = problems;
  pages.push(page);
  await page.goto(`${base}/_lattice/network/`);
  return page;
}

async function signIn(page, user) {
  await page.getByLabel('Username').fill(user.localpart);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expectText(page.locator('#signed-in-as'), `Signed in as ${user.userId}`);
}

/** Polls until `check` returns a truthy value, for at most WAIT_MS. */
async function eventually(check, describe) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const result = await check().catch(() => false);
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${await describe()}`);
    await sleep(100);
  }
}

async function expectText(locator, expected) {
  await eventually(
    async () => (await locator.first().innerText()).includes(expected),
    async () => `text ${JSON.stringify(expected)}; found ${JSON.stringify(await locator.first().innerText().catch((e) => e.message))}`,
  );
}

async function expectHidden(locator) {
  await eventually(async () => (await locator.count()) === 0 || !(await locator.first().isVisible()), async () => 'element to disappear');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], 'the page logged errors');
}

async function assertFitsWidth(page, width) {
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(scrollWidth <= width, `the page is ${scrollWidth}px wide on a ${width}px screen`);
}

/** Renders a small PNG in the browser, for an avatar upload. */
async function makeAvatarPng() {
  const context = await browser.newContext({ viewport: { width: 64, height: 64 } });
  const page = await context.newPage();
  await page.setContent('<body style="margin:0"><div style="width:64px;height:64px;background:#2a7a4b"></div></body>');
  const png = await page.screenshot({ type: 'png' });
  await context.close();
  return png;
}

// ---------- scenarios ----------

const users = {};
let alicePage;

test('sign-in rejects a wrong password and keeps the username', async () => {
  users.alice = await register('alice', 'Alice Martin');
  const page = await openPage();
  await expectText(page.locator('h1'), 'Sign in');
  await shot(page, 'signin-desktop');
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expectText(page.locator('#signin-error'), 'The username or password is wrong.');
  assert.equal(await page.getByLabel('Username').inputValue(), 'alice');
  assertNoProblems(page);
});

test('keyboard-only sign-in and navigation', async () => {
  users.kim = await register('kim', 'Kim Lee');
  const page = await openPage();
  // The username field has focus when the page opens.
  await eventually(async () => (await page.evaluate(() => document.activeElement.id)) === 'signin-user', async () => 'focus on the username');
  await page.keyboard.type('kim');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'signin-password');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
  await expectText(page.locator('#signed-in-as'), 'Signed in as @kim:localhost');
  await expectText(page.locator('#view-requests h1'), 'Requests');
  await expectText(page.locator('#incoming-empty'), 'No one is waiting for your answer.');

  // Focus sits on the view's heading; Shift+Tab goes back to the section
  // links, focus is drawn, and Enter opens a section.
  let focused = '';
  for (let presses = 0; presses < 10 && focused !== 'Connections'; presses += 1) {
    await page.keyboard.press('Shift+Tab');
    focused = await page.evaluate(() => document.activeElement.textContent.trim());
  }
  assert.equal(focused, 'Connections');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, 'solid', 'the focused link shows an outline');
  await page.keyboard.press('Enter');
  await expectText(page.locator('#connections-count'), 'You have no connections yet.');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'connections-title');

  // The token lives in sessionStorage only.
  const stored = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length }));
  assert.deepEqual(stored, { session: 1, local: 0 });
  assertNoProblems(page);
});

test('accept a request sent through the API', async () => {
  users.bob = await register('bob', 'Bob Example');
  users.carol = await register('carol', 'Carol Jones');
  const png = await makeAvatarPng();
  const upload = await ok(users.bob.token, 'POST', '/_matrix/media/v3/upload?filename=bob.png', png, 'image/png');
  await ok(users.bob.token, 'PUT', `/_matrix/client/v3/profile/${encodeURIComponent(users.bob.userId)}/avatar_url`, { avatar_url: upload.content_uri });
  const bobRoom = await sendRequest(users.bob, users.alice, 'We met at the Lyon conference.');
  await sendRequest(users.carol, users.alice, 'Could we talk about your talk on federation?');

  const page = await openPage();
  alicePage = page;
  await signIn(page, users.alice);
  await expectText(page.locator('#incoming-title'), 'Received (2)');
  await expectText(page.locator('#requests-badge'), '2');
  const bobCard = page.locator('#incoming-list li', { hasText: 'Bob Example' });
  await expectText(bobCard, 'We met at the Lyon conference.');
  await expectText(bobCard, '@bob:localhost');
  await expectText(page.locator('#incoming-list li', { hasText: 'Carol Jones' }), 'Could we talk about your talk on federation?');
  // Bob's avatar comes through the authenticated media endpoint; Carol has initials.
  await eventually(
    async () => bobCard.locator('.avatar img').evaluate((img) => img.src.startsWith('blob:') && img.naturalWidth > 0),
    async () => 'Bob\'s avatar image',
  );
  await expectText(page.locator('#incoming-list li', { hasText: 'Carol Jones' }).locator('.avatar'), 'CJ');
  await shot(page, 'requests-desktop');

  await page.getByRole('button', { name: 'Accept request from Bob Example' }).click();
  await expectText(page.locator('#requests-status'), 'You are now connected with Bob Example.');
  await expectText(page.locator('#incoming-title'), 'Received (1)');
  await expectText(page.locator('#requests-badge'), '1');

  await page.getByRole('link', { name: 'Connections' }).click();
  await expectText(page.locator('#connections-count'), 'You have 1 connection.');
  const card = page.locator('#connections-list li', { hasText: 'Bob Example' });
  const today = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC' }).format(Date.now());
  await expectText(card, `Connected since ${today}`);
  const href = await card.getByRole('link', { name: 'Open conversation with Bob Example' }).getAttribute('href');
  assert.equal(href, `${ELEMENT_URL}${encodeURIComponent(bobRoom)}?via=localhost`);

  const bobsView = await ok(users.bob.token, 'GET', `${CONNECTIONS}/connections`);
  assert.deepEqual(bobsView.connections.map((c) => c.user_id), [users.alice.userId]);
  assertNoProblems(page);
});

test('decline another request', async () => {
  const page = alicePage;
  await page.getByRole('link', { name: /^Requests/ }).click();
  await expectText(page.locator('#incoming-title'), 'Received (1)');
  await page.getByRole('button', { name: 'Decline request from Carol Jones' }).click();
  await expectText(page.locator('#requests-status'), 'You declined the request from Carol Jones.');
  await expectText(page.locator('#incoming-title'), 'Received (0)');
  await expectText(page.locator('#incoming-empty'), 'No one is waiting for your answer.');
  await expectHidden(page.locator('#requests-badge'));

  const carols = await ok(users.carol.token, 'GET', `${CONNECTIONS}/requests`);
  assert.deepEqual(carols.outgoing, []);
  const metrics = await ok(users.carol.token, 'GET', `${CONNECTIONS}/metrics`);
  assert.equal(metrics.requests_declined, 1);

  // A request withdrawn while the page shows it can no longer be accepted.
  users.gina = await register('gina', 'Gina Rossi');
  const ginaRoom = await sendRequest(users.gina, users.alice, 'Coffee next week?');
  await page.getByRole('link', { name: 'Connections' }).click();
  await page.getByRole('link', { name: /^Requests/ }).click();
  await expectText(page.locator('#incoming-title'), 'Received (1)');
  await answer(users.gina, ginaRoom, 'withdraw');
  await page.getByRole('button', { name: 'Accept request from Gina Rossi' }).click();
  const ginaCard = page.locator('#incoming-list li', { hasText: 'Gina Rossi' });
  await expectText(ginaCard.locator('.error'), 'Gina Rossi withdrew this request, so it can no longer be accepted.');
  assert.equal(await page.getByRole('button', { name: 'Accept request from Gina Rossi' }).isEnabled(), true);
  assertNoProblems(page);
});

test('find a 2nd-degree person, connect with a note, then withdraw', async () => {
  users.dave = await register('dave', 'Dave Miller');
  users.erin = await register('erin', 'Erin Novak');
  await connect(users.bob, users.dave);
  const page = alicePage;

  await page.getByRole('link', { name: 'Find people' }).click();
  await page.getByLabel('Search the user directory').fill('Dave');
  await page.getByRole('button', { name: 'Search' }).click();
  await expectText(page.locator('#people-status'), '1 person found for “Dave”.');
  const result = page.locator('#people-list li', { hasText: 'Dave Miller' });
  await expectText(result, '2nd degree');
  await expectText(result, '1 mutual connection');
  await shot(page, 'people-desktop');

  await result.getByRole('link', { name: 'View Dave Miller' }).click();
  await expectText(page.locator('#person-title'), 'Dave Miller');
  await expectText(page.locator('#person-degree'), '2nd degree: you have 1 mutual connection.');
  await expectText(page.locator('#mutual-list'), 'Bob Example');
  const note = 'Hello Dave, Bob suggested we talk about the Lyon project.';
  await page.getByLabel('Note (optional)').fill(note);
  await expectText(page.locator('#connect-counter'), `${note.length} of 300 characters`);
  await shot(page, 'person-desktop');
  await page.getByRole('button', { name: 'Send connection request' }).click();
  await expectText(page.locator('#person-actions'), 'Your request was sent to Dave Miller.');

  const daves = await ok(users.dave.token, 'GET', `${CONNECTIONS}/requests`);
  assert.equal(daves.incoming.length, 1);
  assert.equal(daves.incoming[0].user_id, users.alice.userId);
  assert.equal(daves.incoming[0].note, note);

  // A person with no mutual connection is 3rd degree or beyond.
  await page.goto(`${base}/_lattice/network/#person/${encodeURIComponent(users.erin.userId)}`);
  await expectText(page.locator('#person-degree'), '3rd degree or beyond: you have no mutual connections.');
  await expectText(page.locator('#mutual-empty'), 'None.');

  await page.getByRole('link', { name: /^Requests/ }).click();
  await expectText(page.locator('#outgoing-title'), 'Sent (1)');
  await expectText(page.locator('#outgoing-list li', { hasText: 'Dave Miller' }), note);
  await page.getByRole('button', { name: 'Withdraw request to Dave Miller' }).click();
  await expectText(page.locator('#requests-status'), 'You withdrew your request to Dave Miller.');
  await expectText(page.locator('#outgoing-title'), 'Sent (0)');
  await expectText(page.locator('#outgoing-empty'), 'You have no requests waiting for an answer.');

  const davesAfter = await ok(users.dave.token, 'GET', `${CONNECTIONS}/requests`);
  assert.deepEqual(davesAfter.incoming, []);
  assertNoProblems(page);
});

test('search and remove a connection after confirming', async () => {
  users.frank = await register('frank', 'Frank Osei');
  await connect(users.frank, users.alice);
  const page = alicePage;
  await page.getByRole('link', { name: 'Connections' }).click();
  await expectText(page.locator('#connections-count'), 'You have 2 connections.');
  await shot(page, 'connections-desktop');

  await page.getByLabel('Search your connections').fill('fra');
  await expectText(page.locator('#connections-count'), '1 of 2 connections match “fra”.');
  assert.equal(await page.locator('#connections-list li').count(), 1);
  await page.getByLabel('Search your connections').fill('');
  await expectText(page.locator('#connections-count'), 'You have 2 connections.');

  // Cancel keeps the connection.
  await page.getByRole('button', { name: 'Remove Frank Osei from your connections' }).click();
  const dialog = page.getByRole('dialog');
  await expectText(dialog, 'Remove Frank Osei?');
  await expectText(dialog, 'Its history stays.');
  await shot(page, 'remove-dialog-desktop');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await expectHidden(page.getByRole('dialog'));
  assert.equal(await page.locator('#connections-list li').count(), 2);

  await page.getByRole('button', { name: 'Remove Frank Osei from your connections' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Remove connection' }).click();
  await expectText(page.locator('#connections-count'), 'Frank Osei is no longer one of your connections. You have 1 connection.');
  assert.equal(await page.locator('#connections-list li', { hasText: 'Frank Osei' }).count(), 0);

  const franks = await ok(users.frank.token, 'GET', `${CONNECTIONS}/connections`);
  assert.deepEqual(franks.connections, []);

  // Bob ends the connection from his side while Alice's list still shows him.
  await ok(users.bob.token, 'DELETE', `${CONNECTIONS}/connections/${encodeURIComponent(users.alice.userId)}`, {});
  await page.getByRole('button', { name: 'Remove Bob Example from your connections' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Remove connection' }).click();
  const bobCard = page.locator('#connections-list li', { hasText: 'Bob Example' });
  await expectText(bobCard.locator('.error'), 'Bob Example is no longer one of your connections.');
  assertNoProblems(page);
});

test('weekly limit error keeps the note', async () => {
  users.lena = await register('lena', 'Lena Fischer');
  users.oscar = await register('oscar', 'Oscar Reyes');
  for (let i = 1; i <= WEEKLY_LIMIT; i += 1) {
    const peer = await register(`lena-peer-${i}`, `Peer ${i}`);
    await sendRequest(users.lena, peer);
  }
  const page = await openPage();
  await signIn(page, users.lena);
  await page.goto(`${base}/_lattice/network/#person/${encodeURIComponent(users.oscar.userId)}`);
  await expectText(page.locator('#person-degree'), '3rd degree or beyond');
  const note = 'Hoping to connect about the Lyon project.';
  await page.getByLabel('Note (optional)').fill(note);
  await page.getByRole('button', { name: 'Send connection request' }).click();
  await expectText(page.locator('#connect-error'), `You have reached your limit of ${WEEKLY_LIMIT} connection requests per week. You can try again in `);
  assert.equal(await page.getByLabel('Note (optional)').inputValue(), note);
  await shot(page, 'limit-error-desktop');

  const oscars = await ok(users.oscar.token, 'GET', `${CONNECTIONS}/requests`);
  assert.deepEqual(oscars.incoming, []);
  assertNoProblems(page);
});

test('metrics after a scripted history', async () => {
  users.mia = await register('mia', 'Mia Schmidt');
  users.nora = await register('nora', 'Nora Haddad');
  const peers = [];
  for (let i = 1; i <= 4; i += 1) peers.push(await register(`mia-peer-${i}`, `Contact ${i}`));
  const rooms = [];
  for (const peer of peers) rooms.push(await sendRequest(users.mia, peer));
  await answer(peers[0], rooms[0], 'accept');
  await answer(peers[1], rooms[1], 'accept');
  await answer(peers[2], rooms[2], 'decline');
  // Nora opens a conversation with Mia, who replies at once.
  const noraRoom = await connect(users.nora, users.mia);
  await sendText(users.nora, noraRoom, 'Hello Mia');
  await sendText(users.mia, noraRoom, 'Hello Nora');

  const page = await openPage();
  await signIn(page, users.mia);
  await page.getByRole('link', { name: 'Metrics' }).click();
  const figure = (label) => page.locator('#metrics-summary div', { has: page.locator('dt', { hasText: label }) }).locator('dd');
  const expected = {
    'Requests sent': '4',
    'Accepted': '2',
    'Declined': '1',
    'Pending': '1',
    'Withdrawn': '0',
    'Acceptance rate': '50%',
    'Conversations received': '1',
    'Answered within 24 hours': '100%',
    'Answered within 7 days': '100%',
    'Median time to first reply': 'under a minute',
  };
  await expectText(figure('Requests sent'), '4');
  for (const [label, value] of Object.entries(expected)) {
    assert.equal((await figure(label).innerText()).trim(), value, label);
  }

  // Each chart covers 12 weeks. The history is in this week, so earlier weeks are empty.
  const requestsChart = page.locator('figure[data-chart="Connection requests per week"]');
  const rows = requestsChart.locator('tbody tr');
  assert.equal(await rows.count(), 12);
  await requestsChart.getByText('Show the numbers').click();
  assert.deepEqual(await rows.last().locator('td').allTextContents(), ['4', '2']);
  assert.deepEqual(await rows.first().locator('td').allTextContents(), ['0', '0']);
  assert.equal(await requestsChart.locator('svg rect[data-series="Sent"]').count(), 12);
  assert.equal(await requestsChart.locator('svg rect[data-series="Sent"]').last().getAttribute('data-value'), '4');
  const rateRows = page.locator('figure[data-chart="Acceptance rate"] tbody tr');
  assert.deepEqual(await rateRows.last().locator('td').allTextContents(), ['50%']);
  assert.deepEqual(await rateRows.first().locator('td').allTextContents(), ['–']);
  const answeredRows = page.locator('figure[data-chart="Conversations answered in time"] tbody tr');
  assert.deepEqual(await answeredRows.last().locator('td').allTextContents(), ['100%', '100%']);
  await requestsChart.getByText('Show the numbers').click();
  await shot(page, 'metrics-desktop');
  assertNoProblems(page);
});

test('phone-sized screen shows every view without sideways scrolling', async () => {
  users.quinn = await register('quinn', 'Quinn Walker');
  await sendRequest(users.quinn, users.mia, 'Hi Mia, I work with Nora at the Lyon office.');
  const page = await openPage(PHONE);
  await shot(page, 'signin-phone');
  await assertFitsWidth(page, PHONE.width);
  await signIn(page, users.mia);

  await expectText(page.locator('#incoming-list li', { hasText: 'Quinn Walker' }), 'Lyon office');
  await assertFitsWidth(page, PHONE.width);
  const accept = page.getByRole('button', { name: 'Accept request from Quinn Walker' });
  const box = await accept.boundingBox();
  assert.ok(box.height >= 44, `the Accept button is ${box.height}px high; touch targets need 44px`);
  await shot(page, 'requests-phone');

  await page.getByRole('link', { name: 'Connections' }).click();
  await expectText(page.locator('#connections-count'), 'You have 3 connections.');
  await assertFitsWidth(page, PHONE.width);
  await shot(page, 'connections-phone');

  await page.getByRole('link', { name: 'Find people' }).click();
  await page.getByLabel('Search the user directory').fill('Contact');
  await page.getByRole('button', { name: 'Search' }).click();
  await expectText(page.locator('#people-status'), '4 people found for “Contact”.');
  await assertFitsWidth(page, PHONE.width);
  await shot(page, 'people-phone');

  await page.getByRole('link', { name: 'View Contact 4' }).click();
  await expectText(page.locator('#person-title'), 'Contact 4');
  await expectText(page.locator('#person-actions'), 'You sent Contact 4 a connection request');
  await assertFitsWidth(page, PHONE.width);
  await shot(page, 'person-phone');

  await page.getByRole('link', { name: 'Metrics' }).click();
  await expectText(page.locator('#metrics-summary'), 'Acceptance rate');
  await page.locator('figure.chart svg').first().waitFor();
  await assertFitsWidth(page, PHONE.width);
  await shot(page, 'metrics-phone');
  assertNoProblems(page);
});

/** Lists visible text whose contrast with its background is below 4.5:1 (WCAG 2.1 AA). */
async function lowContrastTexts(page) {
  return page.evaluate(() => {
    const channels = (colour) => (colour.match(/[\d.]+/g) || []).map(Number);
    const luminance = ([r, g, b]) => {
      const linear = (c) => {
        const v = c / 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    };
    const background = (element) => {
      for (let node = element; node; node = node.parentElement) {
        const [r, g, b, a = 1] = channels(getComputedStyle(node).backgroundColor);
        if (a > 0) return [r, g, b];
      }
      return [255, 255, 255];
    };
    const failures = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const element = node.parentElement;
      if (!node.textContent.trim() || !element.checkVisibility() || element.closest('svg')) continue;
      const foreground = luminance(channels(getComputedStyle(element).color));
      const behind = luminance(background(element));
      const ratio = (Math.max(foreground, behind) + 0.05) / (Math.min(foreground, behind) + 0.05);
      if (ratio < 4.5) failures.push(`${node.textContent.trim().slice(0, 40)}: ${ratio.toFixed(2)}`);
    }
    return failures;
  });
}

test('text contrast meets WCAG AA in every view', async () => {
  const page = await openPage();
  assert.deepEqual(await lowContrastTexts(page), [], 'sign-in');
  await signIn(page, users.mia);
  await expectText(page.locator('#incoming-title'), 'Received (1)');
  assert.deepEqual(await lowContrastTexts(page), [], 'requests');
  for (const [link, ready] of [['Connections', '#connections-count'], ['Metrics', '#metrics-summary']]) {
    await page.getByRole('link', { name: link }).click();
    await expectText(page.locator(ready), link === 'Metrics' ? 'Acceptance rate' : 'You have');
    assert.deepEqual(await lowContrastTexts(page), [], link);
  }
  await page.goto(`${base}/_lattice/network/#person/${encodeURIComponent(users.oscar.userId)}`);
  await page.getByLabel('Note (optional)').fill('x'.repeat(10));
  assert.deepEqual(await lowContrastTexts(page), [], 'person');
  assertNoProblems(page);
});

test('expired session returns to sign-in and keeps the note', async () => {
  const page = await openPage();
  await signIn(page, users.kim);
  await page.goto(`${base}/_lattice/network/#person/${encodeURIComponent(users.oscar.userId)}`);
  await expectText(page.locator('#person-degree'), '3rd degree or beyond');
  const note = 'Kim here, from the Lyon meetup.';
  await page.getByLabel('Note (optional)').fill(note);

  // The device is logged out elsewhere, so the page's token stops working.
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('lattice.network.session')).access_token);
  await ok(token, 'POST', '/_matrix/client/v3/logout', {});
  await page.getByRole('button', { name: 'Send connection request' }).click();
  await expectText(page.locator('#signin-notice'), 'Your session has expired or was ended elsewhere. Sign in again to continue.');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  await signIn(page, users.kim);
  await expectText(page.locator('#person-title'), 'Oscar Reyes');
  assert.equal(await page.getByLabel('Note (optional)').inputValue(), note);
  assertNoProblems(page);
});

test('sign-out logs the device out', async () => {
  const page = alicePage;
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('lattice.network.session')).access_token);
  assert.equal((await api(token, 'GET', '/_matrix/client/v3/account/whoami')).status, 200);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expectText(page.locator('#signin-notice'), 'You have signed out.');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  const after = await api(token, 'GET', '/_matrix/client/v3/account/whoami');
  assert.equal(after.status, 401);
  assert.equal(after.data.errcode, 'M_UNKNOWN_TOKEN');
  assertNoProblems(page);
});

test('Firefox ESR signs in and lists requests', async (t) => {
  let firefoxBrowser;
  let page;
  if (!existsSync(FIREFOX)) {
    t.skip(`${FIREFOX} is not installed`);
    return;
  }
  try {
    // Debian's Firefox speaks WebDriver BiDi, which Playwright reaches through its moz-firefox channel.
    firefoxBrowser = await firefox.launch({ channel: 'moz-firefox', executablePath: FIREFOX, headless: true, timeout: 60_000 });
    page = await (await firefoxBrowser.newContext()).newPage();
  } catch (error) {
    if (firefoxBrowser) await firefoxBrowser.close().catch(() => {});
    t.skip(`playwright-core cannot drive ${FIREFOX}: ${String(error.message).split('\n')[0]}`);
    return;
  }
  try {
    await page.goto(`${base}/_lattice/network/`);
    await signIn(page, users.mia);
    await expectText(page.locator('#incoming-title'), 'Received (1)');
  } finally {
    await firefoxBrowser.close();
  }
});
