-- Unique email opens and clicks count visitors, as the raw report does: the recipient's
-- visitor id where analytics consent allows it, otherwise the daily device hash. Rollup rows
-- written before held recipient ids, so a database with events reads the email report from
-- raw events until `trackpixel rollups rebuild` has refilled them.
INSERT INTO rollup_parts (part, ready)
SELECT 'email_visitors', NOT EXISTS (SELECT 1 FROM events);
