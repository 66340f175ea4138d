ALTER TABLE devices ADD COLUMN cert_serial TEXT;
CREATE TABLE revoked_certificates (
    serial TEXT PRIMARY KEY,
    device_id BIGINT NOT NULL,
    revoked_ms BIGINT NOT NULL
)
