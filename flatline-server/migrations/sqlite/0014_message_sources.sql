-- The identified sender of each queued message (API.md §6/§15: denying a grantee of an invite_only account deletes
-- that grantee's queued messages to the account). NULL for sealed-sender messages and stories, which carry no
-- sender, and for messages queued before this migration.
ALTER TABLE messages ADD COLUMN source BLOB;

CREATE INDEX messages_source ON messages (aci, source) WHERE source IS NOT NULL;
