-- Every committed change to an account or its devices is announced on `flatline_accounts` (payload: the ACI in
-- hex), so that each server process drops what it cached of that account for authentication. Triggers rather than
-- application code: no write path, present or future, can forget to announce itself.
CREATE FUNCTION flatline_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('flatline_accounts', encode(OLD.aci, 'hex'));
    ELSE
        PERFORM pg_notify('flatline_accounts', encode(NEW.aci, 'hex'));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION flatline_account_changed();
CREATE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION flatline_account_changed();
