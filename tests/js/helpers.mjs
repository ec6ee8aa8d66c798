// Steps shared by the matrix-js-sdk scenarios: waiting, raw Client-Server
// requests, clients with Rust crypto, and reading decrypted messages.

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

export const PASSWORD = "correct horse battery staple";
export const STEP_TIMEOUT_MS = 60_000;

/**
 * Keeps the SDK's warnings and errors and drops the rest of its logs (and the
 * Rust crypto's, which reach console.debug and console.info), which would
 * drown the scenario's own lines.
 */
export function quietSdkLogs() {
    logger.setLevel("warn");
    console.debug = () => {};
    console.info = () => {};
}

export function log(message) {
    console.log(`[scenario] ${message}`);
}

/** Waits until `check` returns a truthy value, or fails with `what` after `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

/**
 * fetch for the SDK. The SDK retries `GET /pushrules/` forever and never
 * finishes its first sync when the server lacks push rules. So while a server
 * answers that endpoint with 404 M_UNRECOGNIZED, the SDK gets an empty rule set.
 * Every other request, and push rules once the server serves them, go to the server.
 */
export async function sdkFetch(input, init) {
    const response = await fetch(input, init);
    let url = input;
    if (input instanceof URL) url = input.href;
    else if (typeof input !== "string") url = input.url;
    if (response.status === 404 && new URL(url).pathname.startsWith("/_matrix/client/v3/pushrules")) {
        const body = await response.clone().json().catch(() => ({}));
        if (body.errcode === "M_UNRECOGNIZED") {
            return new Response(JSON.stringify({ global: {} }), { status: 200, headers: { "content-type": "application/json" } });
        }
    }
    return response;
}

/** One Client-Server request; returns the JSON body or throws with the status and body. */
export async function api(baseUrl, method, path, body, token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${baseUrl}${path}`, { method, headers, body: body && JSON.stringify(body) });
    const json = await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
    return json;
}

export async function register(baseUrl, username) {
    return api(baseUrl, "POST", "/_matrix/client/v3/register", {
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy" },
    });
}

export async function login(baseUrl, username) {
    return api(baseUrl, "POST", "/_matrix/client/v3/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
    });
}

/**
 * A logged-in client with Rust crypto, synced. `session` contains `user_id`,
 * `device_id` and `access_token`; `secretStorageKey.current` is the recovery
 * key once known.
 */
export async function startClient(baseUrl, session, secretStorageKey = { current: null }) {
    const client = sdk.createClient({
        baseUrl,
        userId: session.user_id,
        deviceId: session.device_id,
        accessToken: session.access_token,
        fetchFn: sdkFetch,
        cryptoCallbacks: {
            getSecretStorageKey: async ({ keys }) => {
                const keyId = Object.keys(keys)[0];
                return secretStorageKey.current ? [keyId, secretStorageKey.current.privateKey] : null;
            },
        },
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve, reject) => {
        client.on(sdk.ClientEvent.Sync, (state, _previous, data) => {
            if (state === "PREPARED") resolve();
            if (state === "ERROR") reject(data?.error ?? new Error("sync failed"));
        });
    });
    await client.startClient({ initialSyncLimit: 20 });
    await prepared;
    return client;
}

/**
 * Creates an encrypted direct room the way Element's "start chat" does: the
 * invitee in `invite` with `is_direct`, and `m.room.encryption` in the initial state.
 */
export async function createEncryptedDm(client, invitee) {
    const { room_id: roomId } = await client.createRoom({
        preset: sdk.Preset.TrustedPrivateChat,
        is_direct: true,
        invite: [invitee],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    return roomId;
}

/** Waits until `client` shows a message with `body` in the room, decrypted. */
export async function waitForDecrypted(client, roomId, body, timeoutMs = STEP_TIMEOUT_MS) {
    return waitFor(
        `${client.getUserId()} (${client.getDeviceId()}) to decrypt "${body}"`,
        () => {
            const room = client.getRoom(roomId);
            if (!room) return false;
            const event = room
                .getLiveTimeline()
                .getEvents()
                .find((e) => e.isEncrypted() && !e.isDecryptionFailure() && e.getClearContent()?.body === body);
            return event ?? false;
        },
        timeoutMs,
    );
}

export async function sendText(client, roomId, body) {
    return client.sendMessage(roomId, { msgtype: "m.text", body });
}
