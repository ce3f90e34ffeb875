// Browser test of the Gridlink web console. Started by tests/tests/console.rs, which runs the real
// server with the demo town and the phones; phone steps are asked for with `@@{json}` lines.
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const base = process.env.GRIDLINK_URL;
const password = process.env.GRIDLINK_PASSWORD;
const shots = process.env.SCREENSHOT_DIR;
const photo = process.env.FIXTURE_PHOTO;
assert.ok(base && password && shots && photo, 'started by tests/tests/console.rs');

const replies = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function phone(cmd, arg = {}) {
  process.stdout.write('@@' + JSON.stringify({ cmd, arg }) + '\n');
  const { value } = await replies.next();
  return JSON.parse(value);
}
function ok(what) { console.log('ok ' + what); }

// Chinese must render: a CJK font is installed (fonts-noto-cjk in .ci/run).
assert.match(execSync('fc-list :lang=zh family').toString(), /\S/, 'no Chinese font installed (apt-get install fonts-noto-cjk)');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const open = [];
async function session(user) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'zh-CN' });
  const page = await context.newPage();
  open.push([user, page]);
  page.setDefaultTimeout(20000);
  await page.goto(base + '/console/login');
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(/\/console\/(inbox|service-requests|admin)/), page.click('button[type=submit]')]);
  return page;
}

// Nothing sticks out sideways at 1366×768, and the header's parts do not overlap.
async function layoutIsClean(page, name) {
  const problems = await page.evaluate(() => {
    const out = [];
    const doc = document.scrollingElement;
    if (doc.scrollWidth > window.innerWidth + 1) out.push(`page is ${doc.scrollWidth}px wide`);
    const boxes = ['.top .brand', '.top nav', '.top .who'].map((s) => document.querySelector(s)?.getBoundingClientRect());
    for (let i = 0; i + 1 < boxes.length; i++) {
      if (boxes[i] && boxes[i + 1] && boxes[i].right > boxes[i + 1].left + 1) out.push(`header parts ${i} and ${i + 1} overlap`);
    }
    document.querySelectorAll('.cards .card, .charts .card').forEach((c) => {
      if (c.scrollWidth > c.clientWidth + 1) out.push('a card overflows');
    });
    return out;
  });
  assert.deepEqual(problems, [], `${name}: layout problems`);
}

async function shot(page, name) {
  await layoutIsClean(page, name);
  await page.screenshot({ path: `${shots}/${name}.png` });
}

async function notice(page, text) {
  await page.locator('.notice', { hasText: text }).waitFor();
}

async function act(page, kind, fill = async () => {}) {
  const form = page.locator(`form[data-action="${kind}"]`);
  if (!(await form.isVisible())) await form.locator('xpath=..').locator('summary').click();
  await fill(form);
  await Promise.all([page.waitForURL(/done=/), form.locator('button[type=submit]').click()]);
}

try {
  // --- The town center sees a phone's report arrive live, triages and dispatches it. ---
  const center = await session('zongzhi');
  assert.match(center.url(), /\/console\/inbox/);
  await center.waitForSelector('body[data-live-ready="1"]');
  await center.evaluate(() => { window.__sameLoad = true; });
  const title = '网页测试:老街违章搭建彩钢棚';
  const report = await phone('report', { title });
  await center.locator('#live-list a', { hasText: title }).waitFor();
  assert.equal(await center.evaluate(() => window.__sameLoad), true, 'the inbox updated without a reload');
  ok('a report synced by a phone appears in the open inbox without reload');
  await shot(center, '01-center-inbox');

  await center.goto(base + '/console/stats');
  const closedBefore = Number(await center.locator('[data-stat="已结案"]').textContent());
  const receivedBefore = Number(await center.locator('[data-stat="受理事件"]').textContent());

  const recordUrl = `${base}/console/records/${report.id}`;
  await center.goto(recordUrl);
  await center.locator('h1', { hasText: title }).waitFor();
  await center.locator('.timeline', { hasText: '上报' }).waitFor();
  await shot(center, '02-center-triage');
  await act(center, 'accept');
  await notice(center, '已办理:受理');
  await act(center, 'dispatch', async (form) => {
    await form.locator('select[name=to_unit]').selectOption({ label: '综合行政执法中队(部门)' });
    await form.locator('input[name=days]').fill('5');
    await form.locator('textarea[name=note]').fill('请执法中队核实并依法处置');
  });
  await notice(center, '已办理:派遣');
  const summary = await center.locator('#live-summary').textContent();
  assert.match(summary, /已派遣/);
  assert.match(summary, /综合行政执法中队/);
  const timeline = await center.locator('.timeline').textContent();
  assert.match(timeline, /派遣\s*至 综合行政执法中队,期限/);
  assert.match(timeline, /张华|综治中心工作人员/);
  assert.match(await center.locator('.automerge-url').textContent(), /^automerge:[1-9A-HJ-NP-Za-km-z]{20,}$/, 'the record page names its automerge URL');
  ok('the center accepts and dispatches with a deadline; the timeline says who, when and what');
  const seen = await phone('status', { id: report.id });
  assert.equal(seen.status, 'dispatched');
  ok('the phone syncs the console\'s actions');

  // --- The department signs, and handles with a photo. ---
  const dept = await session('zhifa');
  await dept.locator('#live-list a', { hasText: title }).first().click();
  await dept.waitForURL(/\/console\/records\//);
  await act(dept, 'sign');
  await notice(dept, '已办理:签收');
  await act(dept, 'handle', async (form) => {
    await form.locator('input[name=photo]').setInputFiles(photo);
    await form.locator('textarea[name=note]').fill('已责令当事人自行拆除,现场已恢复');
  });
  await notice(dept, '已办理:处置');
  // The <img> is in the page before its bytes arrive: wait for the picture itself to be
  // decoded (a broken image never gets a width, so this still fails when the photo is not served).
  const img = dept.locator('.photos img').first();
  await img.waitFor();
  const shown = await dept
    .waitForFunction(() => {
      const i = document.querySelector('.photos img');
      return i && i.complete && i.naturalWidth > 0;
    }, null, { timeout: 15000 })
    .then(() => true, () => false);
  assert.ok(shown, 'the uploaded photo is shown');
  ok('the department signs and handles with a photo');
  await shot(dept, '03-department-handled');

  // --- The grid member verifies on the phone; the open console page follows; the center closes. ---
  await center.goto(recordUrl);
  await center.waitForSelector('body[data-live-ready="1"]');
  await phone('verify', { id: report.id });
  await center.locator('#live-summary .status', { hasText: '已核查' }).waitFor();
  await center.locator('form[data-action="close"]').waitFor();
  ok('a verification made on the phone shows on the open record page');
  await act(center, 'close');
  await notice(center, '已办理:结案');

  await center.goto(base + '/console/stats');
  assert.equal(Number(await center.locator('[data-stat="已结案"]').textContent()), closedBefore + 1);
  assert.equal(Number(await center.locator('[data-stat="受理事件"]').textContent()), receivedBefore);
  assert.equal(await center.locator('.chart svg').count(), 5, 'five charts, the last one overdue per holder');
  ok('the figures count the closed case');
  await shot(center, '04-center-stats');
  const xlsx = await center.request.get(base + '/api/v1/figures?format=xlsx');
  assert.equal(xlsx.status(), 200);
  assert.match(xlsx.headers()['content-disposition'], /xlsx/);
  ok('the export button downloads a spreadsheet');

  await center.goto(base + '/console/board');
  const overdueRows = center.locator('section.overdue tr.overdue');
  assert.ok((await overdueRows.count()) > 0, 'the demo town has overdue items');
  const colour = await overdueRows.first().locator('td.deadline').evaluate((td) => getComputedStyle(td).color);
  assert.equal(colour, 'rgb(220, 38, 38)', 'overdue deadlines are red');
  ok('the deadline board shows overdue items first, in red');
  await shot(center, '05-center-board');

  await center.goto(base + '/console/map');
  assert.ok((await center.locator('svg.map polygon').count()) >= 36, 'every grid is drawn');
  assert.ok((await center.locator('svg.map circle.pin').count()) > 0, 'open incidents are pinned');
  ok('the map draws the grid areas with the open incidents');
  await shot(center, '06-center-map');

  // --- A village station takes a request, queues it and hands it off in a batch. ---
  const station = await session('gt201-zhan');
  assert.match(station.url(), /\/console\/service-requests/);
  await shot(station, '07-station-ledger');
  await station.goto(base + '/console/service-requests/new');
  await Promise.all([station.waitForURL(/item=FW004/), station.selectOption('select[name=item]', 'FW004')]);
  const materials = station.locator('form.intake input[name=materials]');
  assert.equal(await materials.count(), 4, 'the checklist comes from the service-item catalog');
  await station.fill('input[name=resident_name]', '王小明');
  await station.fill('input[name=resident_id_number]', '532331198001011231');
  await station.fill('input[name=resident_phone]', '13912345678');
  for (let i = 0; i < 4; i++) await materials.nth(i).check();
  await shot(station, '08-station-new-request');
  await Promise.all([station.waitForURL(/done=receive/), station.click('form.intake button[type=submit]')]);
  const request = station.url().match(/records\/([^?]+)/)[1];
  const fields = await station.locator('#live-summary').textContent();
  assert.match(fields, /高龄津贴申请/);
  assert.match(fields, /王\*/, 'the resident\'s name is masked');
  assert.doesNotMatch(fields, /532331198001011231|13912345678/, 'ID number and phone are masked');
  ok('the station takes a request from the catalog form; personal data is masked');
  await act(station, 'queue');
  await notice(station, '已办理:列入代办');

  await station.goto(base + '/console/service-requests/batch');
  await station.locator(`input[name=ids][value="${request}"]`).waitFor();
  await station.uncheck('input[data-check-all]');
  await station.check(`input[name=ids][value="${request}"]`);
  await shot(station, '09-station-batch');
  await Promise.all([station.waitForURL(/\/console\/batches\//), station.click('button:has-text("生成批次并移交")')]);
  const batchUrl = station.url();
  const manifest = await station.locator('.manifest').textContent();
  assert.match(manifest, /交接清单/);
  assert.match(manifest, /高龄津贴申请/);
  ok('the station hands the request off in a batch with a manifest');
  await shot(station, '10-station-manifest');
  await station.emulateMedia({ media: 'print' });
  assert.equal(await station.locator('.top').isVisible(), false, 'the printout has no navigation');
  await station.screenshot({ path: `${shots}/11-station-manifest-print.png`, fullPage: true });
  await station.emulateMedia({ media: 'screen' });

  // --- The town's service center signs for the whole batch. ---
  const town = await session('bianmin');
  await town.goto(batchUrl);
  await Promise.all([town.waitForURL(/done=1/), town.click('button:has-text("整批签收")')]);
  await notice(town, '已整批签收 1 件');
  ok('the town service center signs for the batch at once');
  await town.goto(`${base}/console/records/${request}`);
  await act(town, 'complete', async (form) => form.locator('textarea[name=note]').fill('审核通过,津贴已核发'));
  await notice(town, '该记录已转出本单位');
  assert.match(town.url(), /\/console\/service-requests\?/, 'a record that left my scope sends me back to my list');

  // --- Back at the station: delivery and the follow-up call. ---
  await station.goto(`${base}/console/records/${request}`);
  await act(station, 'deliver');
  await notice(station, '已办理:送达');
  await act(station, 'follow_up', async (form) => form.locator('select[name=satisfaction]').selectOption('5'));
  await notice(station, '已办理:回访');
  assert.match(await station.locator('.timeline').textContent(), /回访\s*满意度 很满意/);
  ok('the station delivers the result and records the follow-up');

  // --- Access control through the browser. ---
  const other = await phone('other_village_record');
  const denied = await station.goto(`${base}/console/records/${other.id}`);
  assert.equal(denied.status(), 404);
  assert.match(await station.locator('body').textContent(), /找不到/);
  const api = await station.request.get(`${base}/api/v1/records/${other.id}`);
  assert.equal(api.status(), 404);
  const mine = await station.goto(`${base}/console/records/${request}`);
  assert.equal(mine.status(), 200);
  ok('a village user cannot open another village\'s record by URL');

  const forged = await station.request.post(`${base}/console/records/${request}/act`, { multipart: { kind: 'withdraw', note: '伪造' } });
  assert.equal(forged.status(), 403, 'a form without the CSRF token is refused');
  const after = await station.goto(`${base}/console/records/${request}`);
  assert.doesNotMatch(await station.locator('.timeline').textContent(), /撤回/);
  assert.match(after.headers()['content-security-policy'], /default-src 'self'/);
  assert.equal(after.headers()['x-frame-options'], 'DENY');
  ok('forms need the CSRF token; pages carry security headers');

  // --- The administrator (系统管理): people, devices, routing, units, import, catalog, audit. ---
  const admin = await session('admin');
  assert.match(admin.url(), /\/console\/admin\/people/);
  const newPerson = admin.locator('#new-person');
  async function createPerson(id, unitCode) {
    await admin.goto(`${base}/console/admin/people`);
    await newPerson.locator('input[name=id]').fill(id);
    await newPerson.locator('input[name=name]').fill('新网格员');
    await newPerson.locator('select[name=role]').selectOption('grid_member');
    await newPerson.locator('input[name=unit]').fill(unitCode);
    await newPerson.locator('input[name=password]').fill('xinren-2026');
    const [resp] = await Promise.all([admin.waitForNavigation(), newPerson.locator('button[type=submit]').click()]);
    return resp;
  }
  const refused = await createPerson('xinren', '532331101');
  assert.equal(refused.status(), 422);
  assert.match(await admin.locator('.error').textContent(), /网格员不能隶属于单位 532331101/);
  assert.equal(await admin.locator('tr[data-person=xinren]').count(), 0, 'a refused form creates nothing');
  await createPerson('xinren', '532331101201-01-01');
  await notice(admin, '已新建账号');
  await shot(admin, '15-admin-people');
  let login = await phone('login', { user: 'xinren', password: 'xinren-2026' });
  assert.equal(login.ok, true, 'the new account signs in on a phone');
  ok('the administrator creates an account; a wrong unit for the role is refused and creates nothing');

  const row = () => admin.locator('tr[data-person=xinren]');
  async function personForm(op, fill = async () => {}) {
    await admin.goto(`${base}/console/admin/people?q=xinren`);
    const form = row().locator(`form[data-op=${op}]`);
    if (!(await form.isVisible())) await form.locator('xpath=..').locator('summary').click();
    await fill(form);
    await Promise.all([admin.waitForURL(/done=/), form.locator('button[type=submit]').click()]);
  }
  await personForm('password', (f) => f.locator('input[name=password]').fill('xinren-2027'));
  await notice(admin, '已重置密码');
  assert.equal((await phone('sync', { user: 'xinren' })).result, 'unauthorized', 'a reset password ends the sessions');
  assert.equal((await phone('login', { user: 'xinren', password: 'xinren-2026' })).ok, false);
  login = await phone('login', { user: 'xinren', password: 'xinren-2027' });
  assert.equal(login.ok, true);
  ok('a password reset ends the old sessions and the new password works');

  await admin.goto(`${base}/console/admin/devices?q=xinren`);
  const device = admin.locator(`tr[data-device="${login.device_id}"]`);
  assert.match(await device.textContent(), /使用中/);
  await Promise.all([admin.waitForURL(/done=revoked/), device.locator('form[data-op=revoke] button').click()]);
  await notice(admin, '已停用设备');
  assert.match(await admin.locator(`tr[data-device="${login.device_id}"]`).textContent(), /已停用/);
  const wiped = await phone('sync', { user: 'xinren' });
  assert.equal(wiped.result, 'wiped', 'a revoked phone wipes itself at its next sync');
  assert.equal(wiped.records, 0);
  ok('the administrator revokes a device and the phone wipes its data');

  await personForm('update', async (f) => {
    await f.locator('select[name=role]').selectOption('station_staff');
    await f.locator('input[name=unit]').fill('532331101201');
  });
  await notice(admin, '已修改账号的角色和单位');
  assert.match(await row().textContent(), /便民服务站代办员/);
  await personForm('deactivate');
  await notice(admin, '已停用账号');
  assert.equal((await phone('login', { user: 'xinren', password: 'xinren-2027' })).ok, false, 'a deactivated account cannot sign in');
  ok('the administrator changes a role and unit, then deactivates the account');

  // Routing: try, change, try again, and the next report follows the new rule.
  await admin.goto(`${base}/console/admin/routing?category=0501&unit=532331101201-01-01`);
  assert.match(await admin.locator('#routing-outcome').textContent(), /广通社区/);
  const rules = admin.locator('#routing-edit textarea[name=rules]');
  const before = await rules.inputValue();
  await rules.fill('{"rules": [{"category": "9999", "to": "town"}]}');
  const bad = await Promise.all([admin.waitForNavigation(), admin.locator('#routing-edit button[type=submit]').click()]);
  assert.equal(bad[0].status(), 422);
  assert.match(await admin.locator('.error').textContent(), /第1条规则:分类代码“9999”不在目录中/);
  await admin.goto(`${base}/console/admin/routing`);
  assert.equal(await rules.inputValue(), before, 'refused rules change nothing');
  await rules.fill('{"rules": [{"category": "0501", "to": "town"}]}');
  await Promise.all([admin.waitForURL(/done=routing/), admin.locator('#routing-edit button[type=submit]').click()]);
  await notice(admin, '已保存分流规则');
  await admin.goto(`${base}/console/admin/routing?category=0501&unit=532331101201-01-01`);
  assert.match(await admin.locator('#routing-outcome').textContent(), /广通镇/);
  assert.equal((await phone('route', { category: '0501' })).holder, '532331101', 'the next report goes where the new rule says');
  ok('routing rules are validated, tried and take effect on the next report');

  // Units and grid boundaries.
  await admin.goto(`${base}/console/admin/units?q=532331101201-01-01`);
  const grid = admin.locator('tr[data-unit="532331101201-01-01"]');
  await grid.locator('summary').click();
  await grid.locator('textarea[name=boundary]').fill('[[200, 25], [101, 25], [101, 26]]');
  await Promise.all([admin.waitForNavigation(), grid.locator('form[data-op=boundary] button').click()]);
  assert.match(await admin.locator('.error').textContent(), /第 1 个点不在中国境内/);
  await admin.goto(`${base}/console/admin/units?q=532331101201-01-01`);
  await grid.locator('summary').click();
  await grid.locator('textarea[name=boundary]').fill('[[101.00, 25.00], [101.01, 25.00], [101.01, 25.01]]');
  await Promise.all([admin.waitForURL(/done=boundary/), grid.locator('form[data-op=boundary] button').click()]);
  await notice(admin, '已保存网格边界');
  const unitForm = admin.locator('#save-unit');
  await unitForm.locator('input[name=code]').fill('532331101201-01-09');
  await unitForm.locator('input[name=name]').fill('9号网格');
  await unitForm.locator('select[name=kind]').selectOption('网格');
  await unitForm.locator('input[name=parent]').fill('532331101201-01');
  await Promise.all([admin.waitForURL(/done=unit/), unitForm.locator('button[type=submit]').click()]);
  await notice(admin, '已保存单位');
  ok('grid boundaries are checked and saved; a new grid joins the tree');

  // Import by upload: every bad row listed, nothing imported.
  await admin.goto(`${base}/console/admin/import`);
  const upload = admin.locator('#import-upload');
  await upload.locator('select[name=what]').selectOption('people');
  await upload.locator('input[name=file]').setInputFiles({
    name: 'people.csv', mimeType: 'text/csv',
    buffer: Buffer.from('id,name,role,unit,password\nzhao,赵一,网格员,532331101,12345678\nqian,钱二,网格员,532331101201-01-01,short\n'),
  });
  const imported = await Promise.all([admin.waitForNavigation(), upload.locator('button[type=submit]').click()]);
  assert.equal(imported[0].status(), 422);
  const problems = await admin.locator('#import-problems').textContent();
  assert.match(problems, /第2行:网格员不能隶属于单位/);
  assert.match(problems, /第3行:初始密码至少8位/);
  await admin.goto(`${base}/console/admin/people?q=qian`);
  assert.match(await admin.locator('.list').textContent(), /没有找到账号/);
  ok('an upload with bad rows lists each of them and imports nothing');

  await admin.goto(`${base}/console/admin/catalog`);
  assert.match(await admin.locator('.list').first().textContent(), /工作日|小时/);
  ok('the catalog shows categories with their time limits');

  // Every admin action is in the audit log, filtered by person and action.
  await admin.goto(`${base}/console/admin/audit?actor=admin&action=create_person`);
  assert.match(await admin.locator('.list').textContent(), /xinren/);
  for (const action of ['reset_password', 'revoke_device', 'change_person', 'deactivate_person', 'set_routing', 'set_boundary', 'save_unit']) {
    await admin.goto(`${base}/console/admin/audit?actor=admin&action=${action}`);
    assert.doesNotMatch(await admin.locator('.list').textContent(), /没有记录/, `${action} is audited`);
  }
  await shot(admin, '16-admin-audit');
  const denied403 = await center.goto(`${base}/console/admin/people`);
  assert.equal(denied403.status(), 403);
  assert.match(await center.locator('body').textContent(), /无权访问/);
  ok('every admin action is audited; other roles get 403');

  // --- A tablet (portrait) gets the same pages without sideways scrolling. ---
  const tablet = await browser.newContext({ viewport: { width: 820, height: 1180 }, locale: 'zh-CN', storageState: await center.context().storageState() });
  const tab = await tablet.newPage();
  for (const [path, name] of [['/console/inbox', '12-tablet-inbox'], [`/console/records/${report.id}`, '13-tablet-record'], ['/console/stats', '14-tablet-stats']]) {
    await tab.goto(base + path);
    await shot(tab, name);
  }
  ok('pages fit a tablet screen');

  await station.context().clearCookies();
  await station.goto(`${base}/console/records/${request}`);
  assert.match(station.url(), /\/console\/login/);
  ok('without a session every page leads to the login');
} catch (e) {
  console.error(e);
  process.exitCode = 1;
  // What each user saw when it failed.
  for (const [user, page] of open) await page.screenshot({ path: `${shots}/failed-${user}.png`, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
  process.stdin.destroy();
}
