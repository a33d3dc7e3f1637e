// A libsignal client's profile material for an ACI: `node profile_keys.mjs <aci> <seed byte>` prints
// {commitment (standard base64), version (hex), accessKey (standard base64)} for the profile key of 32 × seed.
import * as S from '@signalapp/libsignal-client';
import * as Z from '@signalapp/libsignal-client/zkgroup.js';

const aci = S.Aci.fromUuid(process.argv[2]);
const profileKey = new Z.ProfileKey(new Uint8Array(32).fill(Number(process.argv[3] ?? 1)));
process.stdout.write(
  JSON.stringify({
    commitment: Buffer.from(profileKey.getCommitment(aci).serialize()).toString('base64'),
    version: profileKey.getProfileKeyVersion(aci).toString(),
    accessKey: Buffer.from(profileKey.deriveAccessKey()).toString('base64'),
  }) + '\n',
);
