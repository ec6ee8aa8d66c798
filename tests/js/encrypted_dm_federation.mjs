// An encrypted direct message between users of two homeservers that federate,
// each on matrix-js-sdk with its Rust crypto. The servers are already running;
// the caller registered one user on each.
//
// Usage: node encrypted_dm_federation.mjs ACCOUNTS_JSON RESULT_JSON
//
// ACCOUNTS_JSON names a file with two accounts, `first` and `second`, each
// with `base_url` (the Client-Server API), `server_name`, `user_id`,
// `device_id` and `access_token`. The scenario runs in two rounds:
//
// 1. `first` creates an encrypted DM (invite with `is_direct`,
//    `m.room.encryption` in the initial state) with `second`, who joins;
// 2. `second` creates another one with `first`, who joins.
//
// In each round both users send a message and decrypt the other's. The
// result file records what each client saw, so the caller checks the values;
// `error` names the step that failed, if one did. Exit code 0 means no step failed.

import { readFileSync, writeFileSync } from "node:fs";

import { EventShieldColour, EventShieldReason } from "matrix-js-sdk/lib/crypto-api/index.js";

import { createEncryptedDm, log, quietSdkLogs, sendText, startClient, waitFor, waitForDecrypted } from "./helpers.mjs";

quietSdkLogs();

// Federation adds a hop to every step, and the first key query or claim for a
// user of the other server waits for that server.
const FEDERATION_STEP_TIMEOUT_MS = 90_000;

/** What `reader` saw of a decrypted message: the values the caller asserts. */
async function readerView(reader, event) {
    const info = await reader.getCrypto().getEncryptionInfoForEvent(event);
    return {
        reader: reader.getUserId(),
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

/** One round: `creator` starts the encrypted DM with `invitee`; both talk. */
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

async function main() {
    const [accountsPath, resultPath] = process.argv.slice(2);
    if (!accountsPath || !resultPath) throw new Error("usage: node encrypted_dm_federation.mjs ACCOUNTS_JSON RESULT_JSON");
    const accounts = JSON.parse(readFileSync(accountsPath, "utf8"));
    const record = { rounds: [], step: "start the clients", error: null };
    const clients = [];
    try {
        const first = await startClient(accounts.first.base_url, accounts.first);
        clients.push(first);
        const second = await startClient(accounts.second.base_url, accounts.second);
        clients.push(second);
        log(`${first.getUserId()} and ${second.getUserId()} are logged in with Rust crypto and synced`);

        await round("first creates", first, second, accounts.first.server_name, record);
        await round("second creates", second, first, accounts.second.server_name, record);
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
