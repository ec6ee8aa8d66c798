// My Network: connection requests, connections, degrees and messaging
// metrics of a Lattice account. Plain JavaScript with no dependencies; it
// talks to the Client-Server API and to the connection endpoints of the
// server that serves it. The access token lives in sessionStorage only.
'use strict';

(() => {
  const CLIENT_API = '/_matrix/client/v3';
  const CONNECTIONS_API = '/_matrix/client/unstable/dev.lattice.connections';
  const MEDIA_API = '/_matrix/client/v1/media';
  const SESSION_KEY = 'lattice.network.session';
  const NOTE_MAX_CHARACTERS = 300;
  const MINUTE_MS = 60 * 1000;
  const HOUR_MS = 60 * MINUTE_MS;
  const DAY_MS = 24 * HOUR_MS;
  const WEEK_MS = 7 * DAY_MS;
  const CHART_WEEKS = 12;

  const state = {
    config: { server_name: '', element_url: 'https://matrix.to/#/' },
    session: null,
    profiles: new Map(),
    avatars: new Map(),
    // Notes typed on person cards, kept while the page is open so that a
    // failed request or an expired session loses nothing.
    noteDrafts: new Map(),
    lastSearch: { term: '', results: null },
    returnTo: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---------- DOM helpers ----------

  /** Creates an element with attributes (`text` sets its text) and children. */
  function el(tag, attributes = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'text') element.textContent = value;
      else if (name === 'class') element.className = value;
      else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function showMessage(element, text) {
    element.textContent = text || '';
    element.hidden = !text;
  }

  // ---------- formatting ----------

  function plural(count, singular, pluralForm) {
    return `${count} ${count === 1 ? singular : pluralForm}`;
  }

  function formatDate(ts) {
    return new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' }).format(ts);
  }

  function formatDateTime(ts) {
    return new Intl.DateTimeFormat(undefined, {
      weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit',
    }).format(ts);
  }

  function formatShortDate(ts) {
    return new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' }).format(ts);
  }

  function formatRelative(ts) {
    const elapsed = Date.now() - ts;
    const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
    if (elapsed < MINUTE_MS) return 'just now';
    if (elapsed < HOUR_MS) return format.format(-Math.floor(elapsed / MINUTE_MS), 'minute');
    if (elapsed < DAY_MS) return format.format(-Math.floor(elapsed / HOUR_MS), 'hour');
    if (elapsed < 30 * DAY_MS) return format.format(-Math.floor(elapsed / DAY_MS), 'day');
    return `on ${formatDate(ts)}`;
  }

  /** Formats a duration in words with its two largest units, e.g. "2 days 5 hours". */
  function formatDuration(ms) {
    if (ms < MINUTE_MS) {
      const seconds = Math.max(1, Math.ceil(ms / 1000));
      return plural(seconds, 'second', 'seconds');
    }
    const days = Math.floor(ms / DAY_MS);
    const hours = Math.floor((ms % DAY_MS) / HOUR_MS);
    const minutes = Math.floor((ms % HOUR_MS) / MINUTE_MS);
    if (days > 0) return hours > 0 ? `${plural(days, 'day', 'days')} ${plural(hours, 'hour', 'hours')}` : plural(days, 'day', 'days');
    if (hours > 0) return minutes > 0 ? `${plural(hours, 'hour', 'hours')} ${plural(minutes, 'minute', 'minutes')}` : plural(hours, 'hour', 'hours');
    return plural(minutes, 'minute', 'minutes');
  }

  function formatReplyTime(ms) {
    return ms < MINUTE_MS ? 'under a minute' : formatDuration(ms);
  }

  function formatPercent(share) {
    return `${Math.round(share * 100)}%`;
  }

  function ordinalDegree(degree) {
    if (degree === 1) return '1st';
    if (degree === 2) return '2nd';
    return '3rd+';
  }

  // ---------- the API ----------

  /** An error response of the server, or status 0 when the server was unreachable. */
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.errcode = (body && body.errcode) || '';
      this.retryAfterMs = body && typeof body.retry_after_ms === 'number' ? body.retry_after_ms : null;
      this.limit = body && typeof body.limit === 'number' ? body.limit : null;
    }
  }

  /** Thrown after the server rejected the access token; the page is back at sign-in. */
  class SessionExpired extends Error {}

  async function api(method, path, body, { authenticated = true } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (authenticated) {
      if (!state.session) throw new SessionExpired('not signed in');
      headers.Authorization = `Bearer ${state.session.access_token}`;
    }
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (networkError) {
      throw new ApiError(0, { error: String(networkError) });
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_notJson) {
      data = {};
    }
    if (response.ok) return data;
    if (authenticated && response.status === 401) {
      expireSession();
      throw new SessionExpired(data.errcode || 'M_UNKNOWN_TOKEN');
    }
    throw new ApiError(response.status, data);
  }

  const enc = encodeURIComponent;

  /** Turns a failure into a plain sentence for the place where the action failed. */
  function describeError(error, context = {}) {
    if (error instanceof SessionExpired) return '';
    if (!(error instanceof ApiError)) return `Something went wrong on this page: ${error.message}`;
    if (error.status === 0) return 'The server could not be reached. Check your connection and try again.';
    const retry = error.retryAfterMs !== null
      ? ` You can try again in ${formatDuration(error.retryAfterMs)}, on ${formatDateTime(Date.now() + error.retryAfterMs)}.`
      : '';
    switch (error.errcode) {
      case 'DEV.LATTICE.LIMIT_EXCEEDED':
        if (context.action === 'send') {
          return `You have reached your limit of ${error.limit} connection requests per week.${retry}`;
        }
        return `You have reached a limit of ${error.limit}.${retry}`;
      case 'M_LIMIT_EXCEEDED':
        return `Too many actions in a short time.${retry || ' Wait a moment and try again.'}`;
      case 'M_NOT_FOUND':
        if (context.action === 'remove') return `${context.name} is no longer one of your connections.`;
        if (['accept', 'decline', 'withdraw'].includes(context.action)) {
          return 'This request is no longer pending: it was answered or withdrawn in the meantime.';
        }
        break;
      case 'M_FORBIDDEN':
        if (context.action === 'signin') return 'The username or password is wrong.';
        // The server rejects joining a withdrawn request with M_FORBIDDEN and a message about the withdrawal.
        if (context.action === 'accept' && /withdrew/.test(error.message)) {
          return `${context.name} withdrew this request, so it can no longer be accepted.`;
        }
        break;
      case 'M_USER_DEACTIVATED':
        return 'This account has been deactivated.';
      default:
        break;
    }
    const text = error.message.charAt(0).toUpperCase() + error.message.slice(1);
    return /[.!?]$/.test(text) ? text : `${text}.`;
  }

  /** Reports an error of a whole view; a lost session needs no report. */
  function reportViewError(element, error) {
    if (error instanceof SessionExpired) return;
    showMessage(element, describeError(error));
  }

  // ---------- profiles and avatars ----------

  async function getProfile(userId) {
    if (!state.profiles.has(userId)) {
      const loaded = api('GET', `${CLIENT_API}/profile/${enc(userId)}`).catch((error) => {
        if (error instanceof SessionExpired) throw error;
        return {};
      });
      state.profiles.set(userId, loaded);
    }
    return state.profiles.get(userId);
  }

  async function getProfiles(userIds) {
    const profiles = await Promise.all(userIds.map(getProfile));
    return new Map(userIds.map((userId, index) => [userId, profiles[index]]));
  }

  function displayName(userId, profile) {
    return (profile && profile.displayname) || userId;
  }

  function initials(name) {
    const words = name.replace(/^@/, '').split(/[\s:._-]+/).filter(Boolean);
    const letters = words.slice(0, 2).map((word) => [...word][0].toUpperCase());
    return letters.join('') || '?';
  }

  function colourClass(userId) {
    let hash = 0;
    for (const char of userId) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return `c${hash % 6}`;
  }

  /** Fetches an avatar through the authenticated media endpoints as a blob URL. */
  async function loadAvatar(mxc) {
    const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc || '');
    if (!match || !state.session) return null;
    if (!state.avatars.has(mxc)) {
      const [, server, mediaId] = match;
      const headers = { Authorization: `Bearer ${state.session.access_token}` };
      const attempts = [
        `${MEDIA_API}/thumbnail/${enc(server)}/${enc(mediaId)}?width=96&height=96&method=crop`,
        `${MEDIA_API}/download/${enc(server)}/${enc(mediaId)}`,
      ];
      const loaded = (async () => {
        for (const url of attempts) {
          try {
            const response = await fetch(url, { headers });
            const type = response.headers.get('Content-Type') || '';
            if (response.ok && type.startsWith('image/')) return URL.createObjectURL(await response.blob());
          } catch (_unreachable) {
            return null;
          }
        }
        return null;
      })();
      state.avatars.set(mxc, loaded);
    }
    return state.avatars.get(mxc);
  }

  /** Builds an avatar: the user's initials, replaced by their picture once it loads. */
  function avatar(userId, profile, large = false) {
    const name = displayName(userId, profile);
    const element = el('span', { class: `avatar ${colourClass(userId)}${large ? ' large' : ''}`, 'aria-hidden': 'true' }, initials(name));
    if (profile && profile.avatar_url) {
      loadAvatar(profile.avatar_url).then((url) => {
        if (!url) return;
        element.replaceChildren(el('img', { src: url, alt: '' }));
      });
    }
    return element;
  }

  function conversationLink(roomId) {
    const via = state.config.server_name ? `?via=${enc(state.config.server_name)}` : '';
    return `${state.config.element_url}${enc(roomId)}${via}`;
  }

  function personLink(userId, text) {
    return el('a', { href: `#person/${enc(userId)}` }, text);
  }

  // ---------- session ----------

  function loadSession() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (stored && stored.access_token && stored.user_id) return stored;
    } catch (_invalid) {
      sessionStorage.removeItem(SESSION_KEY);
    }
    return null;
  }

  function setSession(session) {
    state.session = session;
    state.profiles.clear();
    for (const url of state.avatars.values()) url.then((u) => u && URL.revokeObjectURL(u));
    state.avatars.clear();
    if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else sessionStorage.removeItem(SESSION_KEY);
  }

  function expireSession() {
    if (!state.session) return;
    const current = location.hash.slice(1);
    state.returnTo = current || null;
    setSession(null);
    showSignin('Your session has expired or was ended elsewhere. Sign in again to continue.');
  }

  async function signIn(event) {
    event.preventDefault();
    const user = $('signin-user').value.trim();
    const password = $('signin-password').value;
    const error = $('signin-error');
    if (!user || !password) {
      showMessage(error, !user ? 'Enter your username.' : 'Enter your password.');
      (!user ? $('signin-user') : $('signin-password')).focus();
      return;
    }
    const button = $('signin-submit');
    button.disabled = true;
    showMessage(error, '');
    try {
      const response = await api('POST', `${CLIENT_API}/login`, {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user },
        password,
        initial_device_display_name: 'My Network page',
      }, { authenticated: false });
      setSession({ access_token: response.access_token, user_id: response.user_id, device_id: response.device_id });
      $('signin-password').value = '';
      showMessage($('signin-notice'), '');
      enterApp();
    } catch (failure) {
      showMessage(error, describeError(failure, { action: 'signin' }));
      $('signin-password').focus();
    } finally {
      button.disabled = false;
    }
  }

  async function signOut() {
    const button = $('sign-out');
    const error = $('sign-out-error');
    button.disabled = true;
    showMessage(error, '');
    try {
      await api('POST', `${CLIENT_API}/logout`, {});
    } catch (failure) {
      // A rejected token means the session has already ended, which is what sign-out wants.
      if (!(failure instanceof SessionExpired)) {
        showMessage(error, `Signing out failed, so you are still signed in. ${describeError(failure)} Try again.`);
        return;
      }
    } finally {
      button.disabled = false;
    }
    setSession(null);
    state.returnTo = null;
    state.noteDrafts.clear();
    state.lastSearch = { term: '', results: null };
    history.replaceState(null, '', location.pathname);
    showSignin('You have signed out.');
  }

  // ---------- views ----------

  const VIEWS = ['signin', 'requests', 'connections', 'people', 'person', 'metrics'];

  function showView(name) {
    $('loading').hidden = true;
    for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
    const signedIn = name !== 'signin';
    $('tabs').hidden = !signedIn;
    $('account').hidden = !signedIn;
    const tab = name === 'person' ? 'people' : name;
    for (const link of document.querySelectorAll('#tabs a')) {
      if (link.dataset.view === tab) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const titles = {
      signin: 'Sign in', requests: 'Requests', connections: 'Connections', people: 'Find people',
      person: 'Person', metrics: 'Metrics',
    };
    document.title = `${titles[name]} · My Network`;
  }

  function focusHeading(id) {
    const heading = $(id);
    if (heading) heading.focus({ preventScroll: false });
  }

  function showSignin(notice) {
    showView('signin');
    $('signin-server').textContent = state.config.server_name || 'this server';
    showMessage($('signin-notice'), notice || '');
    $('signin-user').focus();
  }

  function enterApp() {
    showMessage($('sign-out-error'), '');
    $('signed-in-as').textContent = `Signed in as ${state.session.user_id}`;
    const target = state.returnTo;
    state.returnTo = null;
    if (target && `#${target}` !== location.hash) location.hash = target;
    else route();
    refreshBadge();
  }

  function route() {
    if (!state.session) {
      showSignin();
      return;
    }
    const hash = decodeURIComponent(location.hash.slice(1));
    const slash = hash.indexOf('/');
    const name = slash >= 0 ? hash.slice(0, slash) : hash;
    const argument = slash >= 0 ? hash.slice(slash + 1) : '';
    switch (name) {
      case 'connections': renderConnections(); break;
      case 'people': renderPeople(); break;
      case 'person': renderPerson(argument); break;
      case 'metrics': renderMetrics(); break;
      default: renderRequests(); break;
    }
  }

  async function refreshBadge() {
    try {
      const requests = await api('GET', `${CONNECTIONS_API}/requests`);
      updateBadge(requests.incoming.length);
    } catch (_ignored) {
      // The badge is a hint; the requests view reports errors itself.
    }
  }

  function updateBadge(count) {
    const badge = $('requests-badge');
    badge.textContent = count > 0 ? String(count) : '';
    badge.hidden = count === 0;
    badge.setAttribute('aria-label', plural(count, 'request waiting', 'requests waiting'));
  }

  /** Runs an action of a card: disables its buttons, reports a failure beside them. */
  async function runAction(buttons, errorElement, context, action) {
    for (const button of buttons) button.disabled = true;
    showMessage(errorElement, '');
    try {
      await action();
      return true;
    } catch (error) {
      showMessage(errorElement, describeError(error, context));
      return false;
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  // ----- requests -----

  function setRequestsStatus(content) {
    let status = $('requests-status');
    if (!status) {
      status = el('p', { id: 'requests-status', class: 'success', role: 'status' });
      $('requests-title').after(status);
    }
    status.replaceChildren(...(content || []));
    status.hidden = !content;
  }

  async function renderRequests(keepStatus = false) {
    showView('requests');
    if (!keepStatus) setRequestsStatus(null);
    showMessage($('requests-error'), '');
    focusHeading('requests-title');
    let requests;
    try {
      requests = await api('GET', `${CONNECTIONS_API}/requests`);
    } catch (error) {
      reportViewError($('requests-error'), error);
      return;
    }
    const profiles = await getProfiles([...requests.incoming, ...requests.outgoing].map((r) => r.user_id)).catch(() => new Map());
    updateBadge(requests.incoming.length);
    $('incoming-title').textContent = `Received (${requests.incoming.length})`;
    $('outgoing-title').textContent = `Sent (${requests.outgoing.length})`;
    $('incoming-empty').hidden = requests.incoming.length > 0;
    $('outgoing-empty').hidden = requests.outgoing.length > 0;
    $('incoming-list').replaceChildren(...requests.incoming.map((r) => requestCard(r, profiles.get(r.user_id), 'incoming')));
    $('outgoing-list').replaceChildren(...requests.outgoing.map((r) => requestCard(r, profiles.get(r.user_id), 'outgoing')));
  }

  function requestCard(request, profile, direction) {
    const name = displayName(request.user_id, profile);
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const when = el('time', { datetime: new Date(request.requested_ts).toISOString(), title: formatDateTime(request.requested_ts) },
      `${direction === 'incoming' ? 'received' : 'sent'} ${formatRelative(request.requested_ts)}`);
    const card = el('li', { class: 'card', 'data-user-id': request.user_id },
      avatar(request.user_id, profile),
      el('div', { class: 'who' },
        el('p', { class: 'name' }, personLink(request.user_id, name)),
        el('p', { class: 'meta' }, el('span', { class: 'mxid' }, request.user_id), ' · ', when),
        request.note ? el('p', { class: 'note' }, el('span', { class: 'visually-hidden' }, 'Note: '), request.note) : null),
      el('div', { class: 'actions' }),
      error);
    const actions = card.querySelector('.actions');
    if (direction === 'incoming') {
      const accept = el('button', { type: 'button', 'aria-label': `Accept request from ${name}` }, 'Accept');
      const decline = el('button', { type: 'button', class: 'secondary', 'aria-label': `Decline request from ${name}` }, 'Decline');
      accept.addEventListener('click', () => answerRequest(request, name, 'accept', [accept, decline], error));
      decline.addEventListener('click', () => answerRequest(request, name, 'decline', [accept, decline], error));
      actions.append(accept, decline);
    } else {
      const withdraw = el('button', { type: 'button', class: 'secondary', 'aria-label': `Withdraw request to ${name}` }, 'Withdraw');
      withdraw.addEventListener('click', () => answerRequest(request, name, 'withdraw', [withdraw], error));
      actions.append(withdraw);
    }
    return card;
  }

  async function answerRequest(request, name, action, buttons, error) {
    const done = await runAction(buttons, error, { action, name }, () =>
      api('POST', `${CONNECTIONS_API}/requests/${enc(request.room_id)}/${action}`, {}));
    if (!done) return;
    const messages = {
      accept: [`You are now connected with ${name}. `, el('a', { href: conversationLink(request.room_id), target: '_blank', rel: 'noopener noreferrer' }, 'Open the conversation')],
      decline: [`You declined the request from ${name}.`],
      withdraw: [`You withdrew your request to ${name}.`],
    };
    setRequestsStatus(messages[action]);
    if (location.hash === '' || location.hash === '#requests') await renderRequests(true);
    else route();
    refreshBadge();
  }

  // ----- connections -----

  let connectionsCache = [];

  async function renderConnections() {
    showView('connections');
    showMessage($('connections-error'), '');
    focusHeading('connections-title');
    try {
      const response = await api('GET', `${CONNECTIONS_API}/connections`);
      const profiles = await getProfiles(response.connections.map((c) => c.user_id));
      connectionsCache = response.connections.map((c) => ({ ...c, profile: profiles.get(c.user_id) || {} }));
    } catch (error) {
      reportViewError($('connections-error'), error);
      return;
    }
    drawConnections();
  }

  function drawConnections() {
    const term = $('connections-search').value.trim().toLowerCase();
    const matching = connectionsCache.filter((c) => !term
      || c.user_id.toLowerCase().includes(term)
      || displayName(c.user_id, c.profile).toLowerCase().includes(term));
    const total = plural(connectionsCache.length, 'connection', 'connections');
    $('connections-count').textContent = term
      ? `${matching.length} of ${total} match “${$('connections-search').value.trim()}”.`
      : connectionsCache.length === 0
        ? 'You have no connections yet. Find people and send them a request.'
        : `You have ${total}.`;
    $('connections-list').replaceChildren(...matching.map(connectionCard));
  }

  function connectionCard(connection) {
    const name = displayName(connection.user_id, connection.profile);
    const error = el('p', { class: 'error', role: 'alert', hidden: true });
    const remove = el('button', { type: 'button', class: 'secondary', 'aria-label': `Remove ${name} from your connections` }, 'Remove');
    const card = el('li', { class: 'card', 'data-user-id': connection.user_id },
      avatar(connection.user_id, connection.profile),
      el('div', { class: 'who' },
        el('p', { class: 'name' }, personLink(connection.user_id, name)),
        el('p', { class: 'meta' }, el('span', { class: 'mxid' }, connection.user_id)),
        el('p', { class: 'meta' }, 'Connected since ',
          el('time', { datetime: new Date(connection.since).toISOString() }, formatDate(connection.since)))),
      el('div', { class: 'actions' },
        el('a', {
          class: 'button', href: conversationLink(connection.room_id), target: '_blank', rel: 'noopener noreferrer',
          'aria-label': `Open conversation with ${name}`,
        }, 'Open conversation'),
        remove),
      error);
    remove.addEventListener('click', async () => {
      const confirmed = await confirmDialog({
        title: `Remove ${name}?`,
        text: `${name} will no longer be one of your connections, and you leave your conversation with them. `
          + 'Its history stays. You can send a new request later.',
        confirm: 'Remove connection',
      });
      if (!confirmed) {
        remove.focus();
        return;
      }
      const done = await runAction([remove], error, { action: 'remove', name }, () =>
        api('DELETE', `${CONNECTIONS_API}/connections/${enc(connection.user_id)}`, {}));
      if (!done) {
        remove.focus();
        return;
      }
      connectionsCache = connectionsCache.filter((c) => c.user_id !== connection.user_id);
      drawConnections();
      showMessage($('connections-error'), '');
      const status = $('connections-count');
      status.textContent = `${name} is no longer one of your connections. ${status.textContent}`;
      focusHeading('connections-title');
    });
    return card;
  }

  /** Asks for confirmation in a modal dialog; resolves to true on confirm. */
  function confirmDialog({ title, text, confirm }) {
    const dialog = $('confirm-dialog');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = confirm;
    return new Promise((resolve) => {
      const finish = (result) => {
        $('confirm-ok').removeEventListener('click', onConfirm);
        $('confirm-cancel').removeEventListener('click', onCancel);
        dialog.removeEventListener('cancel', onCancel);
        if (dialog.open) dialog.close();
        resolve(result);
      };
      const onConfirm = () => finish(true);
      const onCancel = (event) => {
        if (event) event.preventDefault();
        finish(false);
      };
      $('confirm-ok').addEventListener('click', onConfirm);
      $('confirm-cancel').addEventListener('click', onCancel);
      dialog.addEventListener('cancel', onCancel);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  // ----- finding people -----

  function renderPeople() {
    showView('people');
    focusHeading('people-title');
    if (state.lastSearch.results) drawPeople(state.lastSearch.results);
  }

  async function searchPeople(event) {
    event.preventDefault();
    const term = $('people-search').value.trim();
    const status = $('people-status');
    showMessage($('people-error'), '');
    if (!term) {
      showMessage($('people-error'), 'Enter a name or Matrix ID to search for.');
      $('people-search').focus();
      return;
    }
    status.textContent = 'Searching…';
    try {
      const response = await api('POST', `${CLIENT_API}/user_directory/search`, { search_term: term, limit: 20 });
      const others = response.results.filter((r) => r.user_id !== state.session.user_id);
      const degrees = await Promise.all(others.map((r) =>
        api('GET', `${CONNECTIONS_API}/degree/${enc(r.user_id)}`).catch((error) => {
          if (error instanceof SessionExpired) throw error;
          return null;
        })));
      const results = others.map((r, index) => ({
        user_id: r.user_id,
        profile: { displayname: r.display_name, avatar_url: r.avatar_url },
        degree: degrees[index],
      }));
      state.lastSearch = { term, results };
      drawPeople(results);
    } catch (error) {
      status.textContent = '';
      reportViewError($('people-error'), error);
    }
  }

  function drawPeople(results) {
    $('people-search').value = state.lastSearch.term;
    $('people-status').textContent = results.length === 0
      ? `No one found for “${state.lastSearch.term}”.`
      : `${plural(results.length, 'person', 'people')} found for “${state.lastSearch.term}”.`;
    $('people-list').replaceChildren(...results.map((result) => {
      const name = displayName(result.user_id, result.profile);
      const degree = result.degree;
      const mutual = degree ? degree.mutual_connections.length : 0;
      return el('li', { class: 'card', 'data-user-id': result.user_id },
        avatar(result.user_id, result.profile),
        el('div', { class: 'who' },
          el('p', { class: 'name' }, personLink(result.user_id, name),
            degree ? el('span', { class: 'degree' }, `${ordinalDegree(degree.degree)} degree`) : null),
          el('p', { class: 'meta' }, el('span', { class: 'mxid' }, result.user_id)),
          degree && degree.degree === 2 ? el('p', { class: 'meta' }, plural(mutual, 'mutual connection', 'mutual connections')) : null),
        el('div', { class: 'actions' },
          el('a', { class: 'button secondary', href: `#person/${enc(result.user_id)}`, 'aria-label': `View ${name}` },
            degree && degree.degree > 1 ? 'View and connect' : 'View')));
    }));
  }

  // ----- a person's card -----

  async function renderPerson(userId) {
    showView('person');
    showMessage($('person-error'), '');
    $('person-back').hidden = !state.lastSearch.results;
    $('person-title').textContent = userId;
    $('person-id').textContent = userId;
    $('person-degree').textContent = '';
    $('mutual-list').replaceChildren();
    $('person-actions').replaceChildren();
    $('person-avatar').replaceChildren();
    focusHeading('person-title');
    if (userId === state.session.user_id) {
      $('person-degree').textContent = 'This is you.';
      $('mutual-title').hidden = true;
      $('mutual-empty').hidden = true;
      return;
    }
    $('mutual-title').hidden = false;
    let profile;
    let degree;
    let requests;
    let connections;
    try {
      [profile, degree, requests, connections] = await Promise.all([
        getProfile(userId),
        api('GET', `${CONNECTIONS_API}/degree/${enc(userId)}`),
        api('GET', `${CONNECTIONS_API}/requests`),
        api('GET', `${CONNECTIONS_API}/connections`),
      ]);
    } catch (error) {
      reportViewError($('person-error'), error);
      return;
    }
    const name = displayName(userId, profile);
    $('person-title').textContent = name;
    document.title = `${name} · My Network`;
    $('person-avatar').replaceChildren(avatar(userId, profile, true));

    const mutual = degree.mutual_connections;
    $('person-degree').textContent = degree.degree === 1
      ? '1st degree: one of your connections.'
      : degree.degree === 2
        ? `2nd degree: you have ${plural(mutual.length, 'mutual connection', 'mutual connections')}.`
        : '3rd degree or beyond: you have no mutual connections.';
    const mutualProfiles = await getProfiles(mutual).catch(() => new Map());
    $('mutual-empty').hidden = mutual.length > 0;
    $('mutual-list').replaceChildren(...mutual.map((id) => el('li', {}, personLink(id, displayName(id, mutualProfiles.get(id))),
      displayName(id, mutualProfiles.get(id)) === id ? null : el('span', { class: 'muted' }, ` (${id})`))));

    const actions = $('person-actions');
    const connection = connections.connections.find((c) => c.user_id === userId);
    const incoming = requests.incoming.find((r) => r.user_id === userId);
    const outgoing = requests.outgoing.find((r) => r.user_id === userId);
    if (connection) {
      actions.append(
        el('p', {}, 'Connected since ', el('time', { datetime: new Date(connection.since).toISOString() }, formatDate(connection.since)), '.'),
        el('a', { class: 'button', href: conversationLink(connection.room_id), target: '_blank', rel: 'noopener noreferrer' }, 'Open conversation'));
    } else if (incoming) {
      const error = el('p', { class: 'error', role: 'alert', hidden: true });
      const accept = el('button', { type: 'button', 'aria-label': `Accept request from ${name}` }, 'Accept');
      const decline = el('button', { type: 'button', class: 'secondary', 'aria-label': `Decline request from ${name}` }, 'Decline');
      accept.addEventListener('click', () => answerRequest(incoming, name, 'accept', [accept, decline], error));
      decline.addEventListener('click', () => answerRequest(incoming, name, 'decline', [accept, decline], error));
      actions.append(
        el('p', {}, `${name} sent you a connection request ${formatRelative(incoming.requested_ts)}.`),
        incoming.note ? el('p', { class: 'note' }, incoming.note) : null,
        el('div', { class: 'inline' }, accept, decline), error);
    } else if (outgoing) {
      const error = el('p', { class: 'error', role: 'alert', hidden: true });
      const withdraw = el('button', { type: 'button', class: 'secondary', 'aria-label': `Withdraw request to ${name}` }, 'Withdraw');
      withdraw.addEventListener('click', () => answerRequest(outgoing, name, 'withdraw', [withdraw], error));
      actions.append(el('p', {}, `You sent ${name} a connection request ${formatRelative(outgoing.requested_ts)}.`), withdraw, error);
    } else {
      actions.append(connectForm(userId, name));
    }
  }

  function connectForm(userId, name) {
    const note = el('textarea', { id: 'connect-note', maxlength: NOTE_MAX_CHARACTERS, 'aria-describedby': 'connect-counter' });
    note.value = state.noteDrafts.get(userId) || '';
    const counter = el('p', { id: 'connect-counter', class: 'counter', 'aria-live': 'polite' });
    const updateCounter = () => {
      const used = [...note.value].length;
      counter.textContent = `${used} of ${NOTE_MAX_CHARACTERS} characters`;
    };
    updateCounter();
    note.addEventListener('input', () => {
      state.noteDrafts.set(userId, note.value);
      updateCounter();
    });
    const button = el('button', { type: 'submit' }, 'Send connection request');
    const error = el('p', { class: 'error', role: 'alert', hidden: true, id: 'connect-error' });
    const form = el('form', { class: 'connect', 'aria-label': `Connect with ${name}` },
      el('h2', {}, `Connect with ${name}`),
      el('label', { for: 'connect-note' }, 'Note (optional)'),
      note, counter, button, error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const text = note.value.trim();
      if ([...text].length > NOTE_MAX_CHARACTERS) {
        showMessage(error, `The note is ${[...text].length} characters long; shorten it to ${NOTE_MAX_CHARACTERS} or fewer.`);
        note.focus();
        return;
      }
      const body = { user_id: userId };
      if (text) body.note = text;
      const done = await runAction([button], error, { action: 'send', name }, () =>
        api('POST', `${CONNECTIONS_API}/requests`, body));
      if (!done) return;
      state.noteDrafts.delete(userId);
      const sent = el('p', { class: 'success', role: 'status', tabindex: '-1' },
        `Your request was sent to ${name}. It is listed under `, el('a', { href: '#requests' }, 'Requests'), ' until they answer.');
      form.replaceWith(sent);
      sent.focus();
    });
    return form;
  }

  // ----- metrics -----

  /** Start of the current week (Monday 00:00 UTC), the same week the request limit counts. */
  function startOfWeek(ts) {
    const date = new Date(ts);
    const daysSinceMonday = (date.getUTCDay() + 6) % 7;
    return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() - daysSinceMonday);
  }

  async function renderMetrics() {
    showView('metrics');
    showMessage($('metrics-error'), '');
    focusHeading('metrics-title');
    const now = Date.now();
    const current = startOfWeek(now);
    const weeks = Array.from({ length: CHART_WEEKS }, (_, index) => current - (CHART_WEEKS - 1 - index) * WEEK_MS);
    $('metrics-period').textContent = `Figures for the last 12 weeks, from ${formatDate(weeks[0])} until now.`;
    let summary;
    let weekly;
    try {
      [summary, ...weekly] = await Promise.all([
        api('GET', `${CONNECTIONS_API}/metrics?from=${weeks[0]}`),
        ...weeks.map((from) => api('GET', `${CONNECTIONS_API}/metrics?from=${from}&to=${from + WEEK_MS}`)),
      ]);
    } catch (error) {
      reportViewError($('metrics-error'), error);
      return;
    }
    drawSummary(summary);
    drawCharts(weeks, weekly);
  }

  function drawSummary(m) {
    const none = 'No data yet';
    const figures = [
      ['Requests sent', String(m.requests_sent)],
      ['Accepted', String(m.requests_accepted)],
      ['Declined', String(m.requests_declined)],
      ['Pending', String(m.requests_pending)],
      ['Withdrawn', String(m.requests_withdrawn)],
      ['Acceptance rate', m.acceptance_rate === null ? none : formatPercent(m.acceptance_rate)],
      ['Conversations received', String(m.conversations_received)],
      ['Answered within 24 hours', m.answered_within_24h === null ? none : formatPercent(m.answered_within_24h)],
      ['Answered within 7 days', m.answered_within_7d === null ? none : formatPercent(m.answered_within_7d)],
      ['Median time to first reply', m.median_first_reply_ms === null ? none : formatReplyTime(m.median_first_reply_ms)],
    ];
    $('metrics-summary').replaceChildren(...figures.map(([label, value]) => el('div', {}, el('dt', {}, label), el('dd', {}, value))));
  }

  function drawCharts(weeks, weekly) {
    const labels = weeks.map(formatShortDate);
    const percent = (value) => (value === null ? null : Math.round(value * 100));
    // Quick replies read better in minutes, slow ones in hours.
    const slowest = Math.max(0, ...weekly.map((m) => m.median_first_reply_ms || 0));
    const [replyUnit, replyUnitMs] = slowest >= 2 * HOUR_MS ? [' h', HOUR_MS] : [' min', MINUTE_MS];
    const replyTime = (ms) => (ms === null ? null : Math.round((ms / replyUnitMs) * 10) / 10);
    const charts = [
      {
        title: 'Connection requests per week',
        kind: 'bars',
        unit: '',
        series: [
          { name: 'Sent', values: weekly.map((m) => m.requests_sent) },
          { name: 'Accepted', values: weekly.map((m) => m.requests_accepted) },
        ],
      },
      {
        title: 'Acceptance rate',
        kind: 'line',
        unit: '%',
        max: 100,
        series: [{ name: 'Accepted', values: weekly.map((m) => percent(m.acceptance_rate)) }],
      },
      {
        title: 'Conversations answered in time',
        kind: 'line',
        unit: '%',
        max: 100,
        series: [
          { name: 'Within 24 hours', values: weekly.map((m) => percent(m.answered_within_24h)) },
          { name: 'Within 7 days', values: weekly.map((m) => percent(m.answered_within_7d)) },
        ],
      },
      {
        title: `Median time to first reply, in ${replyUnit === ' h' ? 'hours' : 'minutes'}`,
        kind: 'bars',
        unit: replyUnit,
        // A week with replies gets a visible bar even when they came within seconds.
        minimumBar: 2,
        series: [{ name: replyUnit === ' h' ? 'Hours' : 'Minutes', values: weekly.map((m) => replyTime(m.median_first_reply_ms)) }],
      },
    ];
    $('metrics-charts').replaceChildren(...charts.map((chart, index) => chartFigure(chart, labels, index)));
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const SERIES_COLOURS = ['#0b5394', '#d9730d'];

  function svg(tag, attributes = {}, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  /** Rounds a maximum up to a value that divides into clean axis steps. */
  function niceMaximum(value) {
    if (value <= 4) return 4;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * magnitude >= value) return step * magnitude;
    }
    return value;
  }

  /** Draws a chart as inline SVG with a legend, and a table of its values for screen readers. */
  function chartFigure(chart, labels, index) {
    const width = 360;
    const height = 200;
    const left = 36;
    const right = 8;
    const top = 10;
    const bottom = 30;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const values = chart.series.flatMap((s) => s.values).filter((v) => v !== null);
    const max = chart.max || niceMaximum(Math.max(0, ...values));
    const y = (value) => top + plotHeight - (value / max) * plotHeight;
    const slot = plotWidth / labels.length;
    const captionId = `chart-${index}-caption`;

    const image = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': captionId });
    for (let tick = 0; tick <= 4; tick += 1) {
      const value = (max / 4) * tick;
      image.append(svg('line', { x1: left, x2: width - right, y1: y(value), y2: y(value), stroke: '#d5dbe3', 'stroke-width': 1 }));
      image.append(svg('text', { x: left - 4, y: y(value) + 3, 'text-anchor': 'end', 'font-size': 10, fill: '#4a5360' },
        `${Number.isInteger(value) ? value : value.toFixed(1)}${chart.unit === '%' ? '%' : ''}`));
    }
    labels.forEach((label, i) => {
      if (i % 2 === labels.length % 2) return;
      image.append(svg('text', { x: left + slot * i + slot / 2, y: height - 10, 'text-anchor': 'middle', 'font-size': 10, fill: '#4a5360' }, label));
    });
    if (chart.kind === 'bars') {
      const barWidth = (slot * 0.7) / chart.series.length;
      chart.series.forEach((series, s) => {
        series.values.forEach((value, i) => {
          if (value === null) return;
          const x = left + slot * i + slot * 0.15 + barWidth * s;
          const bar = svg('rect', {
            x,
            y: Math.min(y(value), top + plotHeight - (chart.minimumBar || 0)),
            width: Math.max(1, barWidth - 1),
            height: Math.max(chart.minimumBar || 0, top + plotHeight - y(value)),
            fill: SERIES_COLOURS[s], 'data-series': series.name, 'data-week': labels[i], 'data-value': value,
          });
          bar.append(svg('title', {}, `${series.name}, week of ${labels[i]}: ${value}${chart.unit}`));
          image.append(bar);
        });
      });
    } else {
      chart.series.forEach((series, s) => {
        let path = '';
        series.values.forEach((value, i) => {
          if (value === null) return;
          const x = left + slot * i + slot / 2;
          const previous = i > 0 ? series.values[i - 1] : null;
          path += `${previous === null ? 'M' : 'L'}${x.toFixed(1)} ${y(value).toFixed(1)} `;
          // Later series get smaller points, so equal values stay visible.
          const point = svg('circle', { cx: x, cy: y(value), r: s === 0 ? 5 : 3, fill: SERIES_COLOURS[s], 'data-series': series.name, 'data-week': labels[i], 'data-value': value });
          point.append(svg('title', {}, `${series.name}, week of ${labels[i]}: ${value}${chart.unit}`));
          image.append(point);
        });
        if (path) image.insertBefore(svg('path', { d: path.trim(), fill: 'none', stroke: SERIES_COLOURS[s], 'stroke-width': 2 }), image.querySelector('circle'));
      });
    }

    const legend = el('ul', { class: 'legend' }, chart.series.map((series, s) =>
      el('li', {}, el('span', { class: `swatch s${s}`, 'aria-hidden': 'true' }), series.name)));
    const header = el('tr', {}, el('th', { scope: 'col' }, 'Week of'), chart.series.map((series) => el('th', { scope: 'col' }, series.name)));
    const rows = labels.map((label, i) => el('tr', {}, el('th', { scope: 'row' }, label),
      chart.series.map((series) => el('td', {}, series.values[i] === null ? '–' : `${series.values[i]}${chart.unit}`))));
    const table = el('table', {}, el('thead', {}, header), el('tbody', {}, rows));
    return el('figure', { class: 'chart', 'data-chart': chart.title },
      el('figcaption', { id: captionId }, chart.title),
      chart.series.length > 1 ? legend : null,
      image,
      el('details', {}, el('summary', {}, 'Show the numbers'), table));
  }

  // ---------- start ----------

  async function loadConfig() {
    try {
      const response = await fetch('config.json', { cache: 'no-store' });
      if (response.ok) Object.assign(state.config, await response.json());
    } catch (_unreachable) {
      // The defaults serve until the server is reachable again.
    }
    $('signin-server').textContent = state.config.server_name || 'this server';
  }

  function start() {
    const configLoaded = loadConfig();
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', signOut);
    $('people-form').addEventListener('submit', searchPeople);
    $('connections-search').addEventListener('input', drawConnections);
    // The skip link moves focus without changing the hash, which names the view.
    document.querySelector('.skip-link').addEventListener('click', (event) => {
      event.preventDefault();
      $('main').focus();
    });
    window.addEventListener('hashchange', route);
    state.session = loadSession();
    if (state.session) {
      $('signed-in-as').textContent = `Signed in as ${state.session.user_id}`;
      refreshBadge();
    }
    // Conversation links need the configured prefix, so signed-in views wait for it.
    if (state.session) configLoaded.then(route);
    else route();
  }

  document.addEventListener('DOMContentLoaded', start);
})();
