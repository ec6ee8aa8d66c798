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

import {
    PASSWORD,
    api,
    createEncryptedDm,
    log,
    login,
    quietSdkLogs,
    register,
    sendText,
    startClient,
    waitFor,
    waitForDecrypted,
} from "./helpers.mjs";

quietSdkLogs();

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

        const roomId = await createEncryptedDm(alice, bob.getUserId());
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
