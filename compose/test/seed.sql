-- Sample data for compose/docker-compose.test.yaml (run once by the postgres
-- image on an empty data directory).
CREATE TABLE products (
    sku        text PRIMARY KEY,
    name       text NOT NULL,
    stock      integer NOT NULL,
    reorder_at integer NOT NULL
);

CREATE TABLE orders (
    id         serial PRIMARY KEY,
    sku        text NOT NULL REFERENCES products (sku),
    quantity   integer NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO products (sku, name, stock, reorder_at) VALUES
    ('KB-01', 'Keyboard', 3, 10),
    ('MS-02', 'Mouse', 140, 20),
    ('MN-03', 'Monitor', 25, 5);

INSERT INTO orders (sku, quantity, status, created_at) VALUES
    ('KB-01', 1, 'shipped', now() - interval '2 hours'),
    ('MS-02', 2, 'pending', now() - interval '20 minutes'),
    ('MN-03', 1, 'pending', now() - interval '5 minutes');

