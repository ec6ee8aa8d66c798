// An encrypted direct message between users of two homeservers that federate,
// each on matrix-js-sdk with its Rust crypto. The servers are already running;
// the caller registered one user on each.
//
// Usage: node encrypted_dm_federation.mjs ACCOUNTS_JSON RESULT_JSON
//
// ACCOUNTS_JSON names a file with two accounts, `first` and `second`, each
// with `base_url` (the Client-Server API), `server_name`, `user_id`,
// `localpart`, `device_id` and `access_token`. Both accounts use the helpers'
// PASSWORD. The scenario runs in three rounds:
//
// 1. `first` creates an encrypted DM (invite with `is_direct`,
//    `m.room.encryption` in the initial state) with `second`, who joins;
//    both send a message and decrypt the other's;
// 2. `second` creates another one with `first`, who joins, and they talk again;
// 3. each user logs in a new device. The other user's client must learn of
//    it (their server hears of it from the new device's server) and encrypt
//    its next message in the first room for it too; the new device decrypts it;
// 4. each user sets up cross-signing on their first device. The other user's
//    client must see that device signed by its owner, and rate the owner's
//    next message accordingly.
//
// The result file records what each client saw, so the caller checks the
// values; `error` names the step that failed, if one did. Exit code 0 means
// no step failed.

import { readFileSync, writeFileSync } from "node:fs";

import { EventShieldColour, EventShieldReason } from "matrix-js-sdk/lib/crypto-api/index.js";

import {
    PASSWORD,
    createEncryptedDm,
    log,
    login,
    quietSdkLogs,
    sendText,
    startClient,
    waitFor,
    waitForDecrypted,
} from "./helpers.mjs";

quietSdkLogs();

// Federation adds a hop to every step, and the first key query or claim for a
// user of the other server waits for that server.
const FEDERATION_STEP_TIMEOUT_MS = 90_000;

/** Collects what `reader` saw of a decrypted message: the values the caller asserts. */
async function readerView(reader, event) {
    const info = await reader.getCrypto().getEncryptionInfoForEvent(event);
    return {
        reader: reader.getUserId(),
        reader_device: reader.getDeviceId(),
        event_id: event.getId(),
        sender: event.getSender(),
        wire_type: event.getWireType(),
        algorithm: event.getWireContent().algorithm,
        clear_type: event.getType(),
        body: event.getClearContent()?.body ?? null,
        // How the reader's crypto rates the sender: UNKNOWN_DEVICE would mean
        // that it never got the sending device's keys from the other server.
        shield_colour: info ? EventShieldColour[info.shieldColour] : null,
        shield_reason: info && info.shieldReason !== null ? EventShieldReason[info.shieldReason] : null,
    };
}

/** Runs one round: `creator` starts an encrypted DM with `invitee`, and both talk. */
async function round(name, creator, invitee, creatorServer, record) {
    const result = { name, creator: creator.getUserId(), invitee: invitee.getUserId(), messages: [] };
    record.rounds.push(result);
    const step = (what) => {
        record.step = `${name}: ${what}`;
        log(record.step);
    };

    step("create the encrypted DM");
    const roomId = await createEncryptedDm(creator, invitee.getUserId());
    result.room_id = roomId;

    step("the invitee receives the invite");
    const invitedRoom = await waitFor(
        `${invitee.getUserId()} to be invited to ${roomId}`,
        () => {
            const room = invitee.getRoom(roomId);
            return room?.getMyMembership() === "invite" ? room : false;
        },
        FEDERATION_STEP_TIMEOUT_MS,
    );
    const inviteEvent = invitedRoom.getMember(invitee.getUserId())?.events.member;
    result.invite = {
        sender: inviteEvent?.getSender() ?? null,
        is_direct: inviteEvent?.getContent().is_direct ?? null,
        encryption: invitedRoom.currentState.getStateEvents("m.room.encryption", "")?.getContent() ?? null,
    };

    step("the invitee joins");
    await invitee.joinRoom(roomId, { viaServers: [creatorServer] });
    await waitFor(
        `${creator.getUserId()} to see ${invitee.getUserId()} join`,
        () => creator.getRoom(roomId)?.getMember(invitee.getUserId())?.membership === "join",
        FEDERATION_STEP_TIMEOUT_MS,
    );
    for (const client of [creator, invitee]) {
        await waitFor(
            `the room to be encrypted for ${client.getUserId()}`,
            () => client.getCrypto().isEncryptionEnabledInRoom(roomId),
            FEDERATION_STEP_TIMEOUT_MS,
        );
    }
    result.encryption = {
        creator: creator.getRoom(roomId).currentState.getStateEvents("m.room.encryption", "")?.getContent() ?? null,
        invitee: invitee.getRoom(roomId).currentState.getStateEvents("m.room.encryption", "")?.getContent() ?? null,
    };

    const exchanges = [
        [creator, invitee, `${name}: hello from ${creator.getUserId()}, encrypted`],
        [invitee, creator, `${name}: ${invitee.getUserId()} reads you and answers, encrypted`],
    ];
    for (const [sender, reader, body] of exchanges) {
        step(`${sender.getUserId()} sends, ${reader.getUserId()} decrypts`);
        const { event_id: eventId } = await sendText(sender, roomId, body);
        const event = await waitForDecrypted(reader, roomId, body, FEDERATION_STEP_TIMEOUT_MS);
        result.messages.push({ sent_event_id: eventId, ...(await readerView(reader, event)) });
    }
}

/**
 * Runs round 3: a new device of `owner` (whose account is `ownerAccount`) appears;
 * `peer` sends in `roomId` once its client lists that device, and the new
 * device decrypts the message.
 */
async function newDevice(name, owner, ownerAccount, peer, roomId, record, clients) {
    const result = { name, owner: owner.getUserId(), peer: peer.getUserId(), room_id: roomId };
    record.new_devices.push(result);
    record.step = `${name}: ${owner.getUserId()} logs in a new device`;
    log(record.step);
    const session = await login(ownerAccount.base_url, ownerAccount.localpart);
    const device = await startClient(ownerAccount.base_url, session);
    clients.push(device);
    result.device_id = device.getDeviceId();

    record.step = `${name}: ${peer.getUserId()}'s client lists the new device`;
    log(record.step);
    result.devices_seen_by_peer = await waitFor(
        `${peer.getUserId()} to list device ${device.getDeviceId()} of ${owner.getUserId()}`,
        async () => {
            const info = await peer.getCrypto().getUserDeviceInfo([owner.getUserId()]);
            const devices = [...(info.get(owner.getUserId())?.keys() ?? [])].sort();
            return devices.includes(device.getDeviceId()) ? devices : false;
        },
        FEDERATION_STEP_TIMEOUT_MS,
    );

    record.step = `${name}: ${peer.getUserId()} sends, the new device decrypts`;
    log(record.step);
    const body = `${name}: ${peer.getUserId()} writes to every device of ${owner.getUserId()}`;
    const { event_id: eventId } = await sendText(peer, roomId, body);
    const event = await waitForDecrypted(device, roomId, body, FEDERATION_STEP_TIMEOUT_MS);
    result.message = { sent_event_id: eventId, ...(await readerView(device, event)) };
}

/**
 * Runs round 4: `owner` sets up cross-signing on its first device. Then
 * `peer`'s client must see that device signed by its owner and decrypt the
 * owner's next message in `roomId`.
 */
async function crossSigning(name, owner, peer, roomId, record) {
    const result = { name, owner: owner.getUserId(), peer: peer.getUserId(), device_id: owner.getDeviceId() };
    record.cross_signing.push(result);
    record.step = `${name}: ${owner.getUserId()} sets up cross-signing`;
    log(record.step);
    await owner.getCrypto().bootstrapCrossSigning({
        // A first upload needs no user-interactive authentication on either
        // server. The password is sent only if a server requests it.
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (error) {
                if (error?.httpStatus !== 401) throw error;
                await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: owner.getUserId() },
                    password: PASSWORD,
                    session: error.data?.session,
                });
            }
        },
    });
    result.ready_for_owner = await owner.getCrypto().isCrossSigningReady();

    record.step = `${name}: ${peer.getUserId()} sees the device signed by ${owner.getUserId()}`;
    log(record.step);
    await waitFor(
        `${peer.getUserId()} to see ${owner.getUserId()}'s device ${owner.getDeviceId()} signed by its owner`,
        async () => (await peer.getCrypto().getDeviceVerificationStatus(owner.getUserId(), owner.getDeviceId()))?.signedByOwner,
        FEDERATION_STEP_TIMEOUT_MS,
    );
    result.signed_by_owner_for_peer = true;
    const identity = await peer.getCrypto().getUserVerificationStatus(owner.getUserId());
    result.identity_verified_for_peer = identity.isCrossSigningVerified();

    record.step = `${name}: ${owner.getUserId()} sends, ${peer.getUserId()} decrypts`;
    log(record.step);
    const body = `${name}: ${owner.getUserId()} writes from a cross-signed device`;
    const { event_id: eventId } = await sendText(owner, roomId, body);
    const event = await waitForDecrypted(peer, roomId, body, FEDERATION_STEP_TIMEOUT_MS);
    result.message = { sent_event_id: eventId, ...(await readerView(peer, event)) };
}

async function main() {
    const [accountsPath, resultPath] = process.argv.slice(2);
    if (!accountsPath || !resultPath) throw new Error("usage: node encrypted_dm_federation.mjs ACCOUNTS_JSON RESULT_JSON");
    const accounts = JSON.parse(readFileSync(accountsPath, "utf8"));
    const record = { rounds: [], new_devices: [], cross_signing: [], step: "start the clients", error: null };
    const clients = [];
    try {
        const first = await startClient(accounts.first.base_url, accounts.first);
        clients.push(first);
        const second = await startClient(accounts.second.base_url, accounts.second);
        clients.push(second);
        log(`${first.getUserId()} and ${second.getUserId()} are logged in with Rust crypto and synced`);

        await round("first creates", first, second, accounts.first.server_name, record);
        await round("second creates", second, first, accounts.second.server_name, record);
        const roomId = record.rounds[0].room_id;
        await newDevice("first's new device", first, accounts.first, second, roomId, record, clients);
        await newDevice("second's new device", second, accounts.second, first, roomId, record, clients);
        await crossSigning("first cross-signs", first, second, roomId, record);
        await crossSigning("second cross-signs", second, first, roomId, record);
        record.step = "done";
        log("PASS");
    } catch (error) {
        record.error = String(error?.stack ?? error);
        console.error(`[scenario] FAIL at "${record.step}": ${record.error}`);
        process.exitCode = 1;
    } finally {
        writeFileSync(resultPath, JSON.stringify(record, null, 2));
        for (const client of clients) client.stopClient();
    }
}

await main();
// The SDK keeps timers alive after stopClient; the scenario is over.
process.exit(process.exitCode ?? 0);
