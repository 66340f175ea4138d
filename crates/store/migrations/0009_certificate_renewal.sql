ALTER TABLE devices ADD COLUMN next_cert_fingerprint TEXT;
ALTER TABLE devices ADD COLUMN next_cert_serial TEXT;
ALTER TABLE devices ADD COLUMN next_cert_offered_ms BIGINT;
ALTER TABLE devices ADD COLUMN next_cert_expires_ms BIGINT;
ALTER TABLE devices ADD COLUMN cert_expires_ms BIGINT;
ALTER TABLE revoked_certificates ADD COLUMN expires_ms BIGINT
