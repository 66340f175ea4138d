-- Alerts are read per device, and a repeated condition is looked up by its code and time.
CREATE INDEX alerts_by_device ON alerts (device_id, code, at)
