-- The seed's pictures are generated SVGs served by the catalog itself (/images/...svg); the
-- .jpg paths of earlier seeds were never served by anything.
UPDATE products SET image_url = replace(image_url, '.jpg', '.svg')
WHERE image_url LIKE '/images/%.jpg';
