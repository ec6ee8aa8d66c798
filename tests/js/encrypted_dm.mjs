// An encrypted direct message between two users of matrix-js-sdk with its Rust
// crypto, against a Lattice server started here on loopback:
//
// 1. alice and bob, each on a fresh device, start an encrypted DM, exchange a
//    message each way, and both read the other's message decrypted;
// 2. alice sets up cross-signing, secret storage and key backup on her first
//    device. A third device of hers unlocks them with the recovery key, is
//    cross-signed, restores the room keys from the backup and decrypts the
//    history it never received keys for.
//
// The server binary comes from LATTICE_BIN. Exit code 0 means every step passed.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, createWriteStream, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const PASSWORD = "correct horse battery staple";
const STEP_TIMEOUT_MS = 60_000;

// The SDK's own logs (and the Rust crypto's, which reach console.debug and
// console.info) would drown the scenario's; keep their warnings and errors.
logger.setLevel("warn");
console.debug = () => {};
console.info = () => {};

function log(message) {
    console.log(`[scenario] ${message}`);
}

async function freePort() {
    return new Promise((resolve, reject) => {
        const probe = createServer();
        probe.once("error", reject);
        probe.listen(0, "127.0.0.1", () => {
            const { port } = probe.address();
            probe.close(() => resolve(port));
        });
    });
}

/** Waits until `check` returns a truthy value, or fails with `what` after the step timeout. */
async function waitFor(what, check, timeoutMs = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

async function startServer() {
    const binary = process.env.LATTICE_BIN;
    if (!binary) throw new Error("LATTICE_BIN must name the lattice server binary");
    const dataDir = mkdtempSync(join(tmpdir(), "lattice-js-"));
    const port = await freePort();
    const configPath = join(dataDir, "lattice.toml");
    writeFileSync(
        configPath,
        [
            `server_name = "localhost"`,
            `data_dir = "${dataDir}"`,
            ``,
            `[listen]`,
            `client = "127.0.0.1:${port}"`,
            ``,
            `[registration]`,
            `enabled = true`,
            ``,
            `[policy]`,
            `name = "open"`,
            ``,
            `[rate_limits]`,
            `enabled = false`,
            ``,
        ].join("\n"),
    );
    const logPath = join(dataDir, "server.log");
    const logFile = createWriteStream(logPath);
    const child = spawn(binary, ["serve", "--config", configPath], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.pipe(logFile);
    child.stderr.pipe(logFile);
    const baseUrl = `http://127.0.0.1:${port}`;
    await waitFor("the server to answer /versions", async () => {
        if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
        try {
            return (await fetch(`${baseUrl}/_matrix/client/versions`)).ok;
        } catch {
            return false;
        }
    }, 30_000);
    return {
        baseUrl,
        logPath,
        async stop() {
            if (child.exitCode === null) {
                child.kill("SIGTERM");
                await Promise.race([
                    new Promise((resolve) => child.once("exit", resolve)),
                    new Promise((resolve) => setTimeout(resolve, 10_000)),
                ]);
                if (child.exitCode === null) child.kill("SIGKILL");
            }
            rmSync(dataDir, { recursive: true, force: true });
        },
    };
}

/**
 * fetch for the SDK. The SDK retries `GET /pushrules/` forever and never
 * finishes its first sync when the server lacks push rules. So while Lattice
 * answers that endpoint with 404 M_UNRECOGNIZED, the SDK gets an empty rule set.
 * Every other request, and push rules once the server serves them, go to the server.
 */
async function sdkFetch(input, init) {
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

async function api(baseUrl, method, path, body, token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${baseUrl}${path}`, { method, headers, body: body && JSON.stringify(body) });
    const json = await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
    return json;
}

/** A logged-in client with Rust crypto, synced. `secretStorageKey.current` is the recovery key once known. */
async function startClient(baseUrl, session, secretStorageKey) {
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

async function register(baseUrl, username) {
    return api(baseUrl, "POST", "/_matrix/client/v3/register", {
        username,
        password: PASSWORD,
        auth: { type: "m.login.dummy" },
    });
}

async function login(baseUrl, username) {
    return api(baseUrl, "POST", "/_matrix/client/v3/login", {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
    });
}

/** Waits until `client` shows a message with `body` in the room, decrypted. */
async function waitForDecrypted(client, roomId, body) {
    return waitFor(`${client.getUserId()} (${client.getDeviceId()}) to decrypt "${body}"`, () => {
        const room = client.getRoom(roomId);
        if (!room) return false;
        const event = room
            .getLiveTimeline()
            .getEvents()
            .find((e) => e.isEncrypted() && !e.isDecryptionFailure() && e.getClearContent()?.body === body);
        return event ?? false;
    });
}

async function sendText(client, roomId, body) {
    await client.sendMessage(roomId, { msgtype: "m.text", body });
}

async function main() {
    const server = await startServer();
    const clients = [];
    try {
        const aliceSession = await register(server.baseUrl, "alice");
        const bobSession = await register(server.baseUrl, "bob");
        const aliceKey = { current: null };
        const alice = await startClient(server.baseUrl, aliceSession, aliceKey);
        clients.push(alice);
        const bob = await startClient(server.baseUrl, bobSession, { current: null });
        clients.push(bob);
        log("alice and bob are logged in with Rust crypto and synced");

        const { room_id: roomId } = await alice.createRoom({
            preset: sdk.Preset.TrustedPrivateChat,
            is_direct: true,
            invite: [bob.getUserId()],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        await waitFor("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
        await bob.joinRoom(roomId);
        await waitFor("alice to see bob join", () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
        await waitFor("the room to be encrypted for alice", () => alice.getCrypto().isEncryptionEnabledInRoom(roomId));
        log(`encrypted DM ${roomId} is set up`);

        await sendText(alice, roomId, "Hello Bob, this is encrypted");
        const atBob = await waitForDecrypted(bob, roomId, "Hello Bob, this is encrypted");
        if (atBob.getWireType() !== "m.room.encrypted") throw new Error("the message did not travel encrypted");
        await sendText(bob, roomId, "Hi Alice, I can read you");
        await waitForDecrypted(alice, roomId, "Hi Alice, I can read you");
        log("both sides decrypted each other's message");

        // Cross-signing, secret storage and key backup on alice's first device.
        const aliceCrypto = alice.getCrypto();
        await aliceCrypto.bootstrapCrossSigning({
            authUploadDeviceSigningKeys: async (makeRequest) => {
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: alice.getUserId() },
                    password: PASSWORD,
                });
            },
        });
        aliceKey.current = await aliceCrypto.createRecoveryKeyFromPassphrase();
        await aliceCrypto.bootstrapSecretStorage({
            createSecretStorageKey: async () => aliceKey.current,
            setupNewKeyBackup: true,
        });
        if (!(await aliceCrypto.isCrossSigningReady())) throw new Error("cross-signing is not ready on alice's first device");
        const backedUp = await waitFor("the room keys to reach the key backup", async () => {
            const info = await api(server.baseUrl, "GET", "/_matrix/client/v3/room_keys/version", undefined, aliceSession.access_token);
            return info.count > 0 ? info : false;
        });
        log(`cross-signing ready; key backup version ${backedUp.version} holds ${backedUp.count} key(s)`);

        // A third device: unlock with the recovery key, get cross-signed, restore the backup.
        const thirdSession = await login(server.baseUrl, "alice");
        const third = await startClient(server.baseUrl, thirdSession, aliceKey);
        clients.push(third);
        const thirdCrypto = third.getCrypto();
        // Importing the cross-signing keys needs the device's first /keys/query
        // of its own user to have finished, which happens in the background after login.
        await waitFor("the third device to import the cross-signing keys", async () => {
            try {
                await thirdCrypto.bootstrapCrossSigning({});
            } catch (error) {
                if (!String(error).includes("failed to import")) throw error;
            }
            return (await thirdCrypto.getCrossSigningKeyId()) !== null;
        });
        // The device learns of its new signature from its next /keys/query, which
        // the server prompts through device_lists.changed.
        await waitFor("the third device to see itself cross-signed", async () => {
            const status = await thirdCrypto.getDeviceVerificationStatus(third.getUserId(), third.getDeviceId());
            return status?.crossSigningVerified;
        });
        await waitFor("alice's first device to see the third one cross-signed", async () => {
            await aliceCrypto.getUserDeviceInfo([alice.getUserId()], true);
            const seen = await aliceCrypto.getDeviceVerificationStatus(alice.getUserId(), third.getDeviceId());
            return seen?.crossSigningVerified;
        });
        log(`third device ${third.getDeviceId()} is cross-signed`);

        await thirdCrypto.loadSessionBackupPrivateKeyFromSecretStorage();
        await thirdCrypto.checkKeyBackupAndEnable();
        const restored = await thirdCrypto.restoreKeyBackup();
        if (!(restored.imported > 0)) throw new Error(`nothing restored from the key backup: ${JSON.stringify(restored)}`);
        await waitForDecrypted(third, roomId, "Hello Bob, this is encrypted");
        await waitForDecrypted(third, roomId, "Hi Alice, I can read you");
        log(`third device restored ${restored.imported} key(s) and decrypted the history`);
        log("PASS");
    } catch (error) {
        console.error(`[scenario] FAIL: ${error?.stack ?? error}`);
        try {
            const lines = readFileSync(server.logPath, "utf8").split("\n");
            console.error(`[scenario] last server log lines:\n${lines.slice(-40).join("\n")}`);
        } catch {
            // No log to show.
        }
        process.exitCode = 1;
    } finally {
        for (const client of clients) client.stopClient();
        await server.stop();
    }
}

await main();
// The SDK keeps timers alive after stopClient; the scenario is over.
process.exit(process.exitCode ?? 0);
