// A local OpenID Provider shaped like Microsoft Entra ID, for the dev stack and the tests.
//
//   node devstack/idp.mjs CONFIG.json
//
// panva's oidc-provider 8, served over HTTPS (the cert/key from CONFIG, a local test CA) and
// mounted under /{tenant}/v2.0 so that the issuer is https://{host}:{port}/{tenant}/v2.0 like
// Entra's. It has its own login page (no devInteractions), grants consent silently (as Entra does
// for an admin-consented app), RP-initiated logout, RS256 ID tokens with email, name,
// preferred_username, oid, tid (and any extra claim a person has, e.g. xms_edov or roles).
// prompt=select_account shows the login page even with a session, as Entra's account picker lets a
// person choose another account.
//
// When listening it prints exactly one line to stdout: READY {"issuer": "..."}.
// It logs nothing secret (no passwords, codes or tokens).

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import process from 'node:process';

import Provider, { interactionPolicy } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  process.stderr.write('usage: node devstack/idp.mjs CONFIG.json\n');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const host = config.host || '127.0.0.1';
const port = Number(config.port);
const tenant = String(config.tenant);
if (!port || !tenant) {
  process.stderr.write('CONFIG needs "port" and "tenant"\n');
  process.exit(2);
}
const mount = `/${tenant}/v2.0`;
const issuer = `https://${host}:${port}${mount}`;

// ---- people ---------------------------------------------------------------------------------
const people = (config.people || []).map((p) => {
  const claims = { ...(p.claims || {}) };
  const sub = String(p.sub || claims.sub || claims.oid || p.login);
  delete claims.sub;
  return { login: String(p.login), password: String(p.password), sub, claims };
});
const byLogin = new Map(people.map((p) => [p.login.toLowerCase(), p]));
const bySub = new Map(people.map((p) => [p.sub, p]));

// Claims per scope, Entra-like. Any claim a person carries beyond these goes under openid so it
// is emitted whenever an ID token is (e.g. xms_edov, groups, roles).
const scopeClaims = {
  openid: ['sub', 'oid', 'tid'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username'],
};
const known = new Set(Object.values(scopeClaims).flat());
for (const p of people) {
  for (const name of Object.keys(p.claims)) {
    if (!known.has(name)) {
      known.add(name);
      scopeClaims.openid.push(name);
    }
  }
}

// ---- keys -----------------------------------------------------------------------------------
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = privateKey.export({ format: 'jwk' });
signingJwk.kid = crypto.randomBytes(12).toString('base64url');
signingJwk.alg = 'RS256';
signingJwk.use = 'sig';

// ---- clients --------------------------------------------------------------------------------
// client_credentials: the app checks that the IdP accepts its credential (a token for itself, scope
// "{client_id}/.default", as Entra answers it), never on a person's login.
// require_auth_time: every ID token carries auth_time, as Entra's do once the app registration has the
// auth_time optional claim (infra/optional-claims.json); without it oidc-provider sends auth_time only
// when the request asked prompt=login (or max_age), so a request stripped of its prompt would show no
// old auth_time at all.
const clients = (config.clients || []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  response_types: ['code'],
  require_auth_time: true,
  ...c,
}));

// ---- pages ----------------------------------------------------------------------------------
function esc(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

const STYLE = 'body{font-family:system-ui,sans-serif;margin:40px auto;max-width:360px}'
  + 'label,input,button{display:block;width:100%;margin:6px 0;font-size:15px;box-sizing:border-box}'
  + 'input{padding:6px}button{padding:8px;background:#0067b8;color:#fff;border:0;cursor:pointer}'
  + '.error{color:#a80000}';

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>`;
}

function loginPage(uid, { login = '', error = '', clientId = '' } = {}) {
  return page('Sign in', `
<p>Local development IdP (tenant ${esc(tenant)})${clientId ? `, signing in to ${esc(clientId)}` : ''}.</p>
${error ? `<p class="error" id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="${esc(`${mount}/interaction/${encodeURIComponent(uid)}/login`)}" autocomplete="off">
  <label for="login">Email or username</label>
  <input id="login" name="login" type="text" value="${esc(login)}" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button type="submit" id="submit">Sign in</button>
</form>`);
}

async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = page('Sign out', `
<p>Sign out of the local development IdP?</p>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout" id="logout-yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm" id="logout-no">No, stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<p>You have signed out of the local development IdP.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Sign-in error', Object.entries(out)
    .map(([key, value]) => `<p><strong>${esc(key)}</strong>: ${esc(value)}</p>`)
    .join('\n'));
}

// ---- provider -------------------------------------------------------------------------------
// Entra's prompts: login, consent, and select_account (requestable: a person picks another account).
const policy = interactionPolicy.base();
policy.add(new interactionPolicy.Prompt({ name: 'select_account', requestable: true }));

const provider = new Provider(issuer, {
  clients,
  // How clients may authenticate at the token endpoint (discovery's
  // token_endpoint_auth_methods_supported); CONFIG may narrow it, e.g. to client_secret_basic only.
  ...(config.clientAuthMethods ? { clientAuthMethods: config.clientAuthMethods } : {}),
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  claims: scopeClaims,
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true },
  async findAccount(ctx, sub) {
    const person = bySub.get(sub);
    if (!person) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { ...person.claims, sub };
      },
    };
  },
  interactions: {
    policy,
    url: (ctx, interaction) => `${mount}/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    revocation: { enabled: false },
    introspection: { enabled: false },
    userinfo: { enabled: true },
    clientCredentials: { enabled: true },
  },
  renderError,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 300,
    IdToken: 3600,
    Interaction: 900,
    Session: 8 * 3600,
    Grant: 8 * 3600,
    RefreshToken: 24 * 3600,
  },
});

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`idp server_error ${ctx.method} ${ctx.path}: ${err && err.stack}\n`);
});
for (const event of ['authorization.error', 'grant.error', 'end_session.error']) {
  provider.on(event, (ctx, err) => {
    process.stderr.write(`idp ${event}: ${err.error || err.name} ${err.error_description || ''}\n`);
  });
}

// ---- interactions (the login page) ----------------------------------------------------------
async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Frame-Options', 'DENY');
  res.end(html);
}

function checkPassword(person, password) {
  const a = crypto.createHash('sha256').update(person ? person.password : '').digest();
  const b = crypto.createHash('sha256').update(password).digest();
  return Boolean(person) && crypto.timingSafeEqual(a, b);
}

async function grantConsent(req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  let { grantId } = details;
  const accountId = session && session.accountId;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  grantId = await grant.save();
  const consent = details.grantId ? {} : { grantId };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function handleInteraction(req, res, path) {
  const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(path);
  if (!match) return false;
  const [, uid, loginAction] = match;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;

  const choosing = prompt.name === 'select_account';
  if (!loginAction && req.method === 'GET') {
    if (prompt.name === 'login' || choosing) {
      send(res, 200, loginPage(uid, { clientId: params.client_id }));
    } else if (prompt.name === 'consent') {
      await grantConsent(req, res, details);
    } else {
      send(res, 400, page('Sign-in error', `<p>Unsupported prompt ${esc(prompt.name)}</p>`));
    }
    return true;
  }
  if (loginAction && req.method === 'POST') {
    if (prompt.name !== 'login' && !choosing) {
      send(res, 400, page('Sign-in error', '<p>This sign-in step is already done.</p>'));
      return true;
    }
    const form = await readForm(req);
    const login = (form.get('login') || '').trim();
    const person = byLogin.get(login.toLowerCase());
    if (!checkPassword(person, form.get('password') || '')) {
      send(res, 200, loginPage(uid, {
        login, clientId: params.client_id, error: 'Your account or password is incorrect.',
      }));
      return true;
    }
    // Signing in here also answers a select_account prompt: the person chose this account.
    const chose = String(params.prompt || '').split(' ').includes('select_account');
    await provider.interactionFinished(req, res, {
      login: { accountId: person.sub, amr: ['pwd'] },
      ...(chose ? { select_account: {} } : {}),
    }, { mergeWithLastSubmission: false });
    return true;
  }
  res.statusCode = 405;
  res.end();
  return true;
}

// ---- server ---------------------------------------------------------------------------------
const callback = provider.callback();

const server = https.createServer({
  cert: readFileSync(config.certFile),
  key: readFileSync(config.keyFile),
}, async (req, res) => {
  const original = req.url || '/';
  if (original !== mount && !original.startsWith(`${mount}/`) && !original.startsWith(`${mount}?`)) {
    res.statusCode = 404;
    res.setHeader('Content-Type', 'text/plain');
    res.end('not found\n');
    return;
  }
  const rest = original.slice(mount.length) || '/';
  const stripped = rest.startsWith('/') ? rest : `/${rest}`;
  try {
    const path = stripped.split('?')[0];
    if (path.startsWith('/interaction/')) {
      if (await handleInteraction(req, res, path)) return;
    }
  } catch (err) {
    const message = err && (err.error_description || err.message);
    process.stderr.write(`idp interaction error: ${err && err.name}: ${message}\n`);
    if (!res.headersSent) {
      send(res, 400, page('Sign-in error', `<p>${esc(message)}</p>`));
    }
    return;
  }
  req.originalUrl = original;
  req.baseUrl = mount;
  req.url = stripped;
  callback(req, res);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(port, host, () => {
  process.stdout.write(`READY {"issuer": ${JSON.stringify(issuer)}}\n`);
});
