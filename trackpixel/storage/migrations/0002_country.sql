-- Country of the visitor, looked up from the anonymised IP (ISO 3166-1 alpha-2).
ALTER TABLE events ADD COLUMN country TEXT;
