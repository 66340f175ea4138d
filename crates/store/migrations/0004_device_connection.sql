ALTER TABLE devices ADD COLUMN connected_via TEXT
