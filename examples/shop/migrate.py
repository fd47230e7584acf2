"""The release step: create the schema (idempotent, safe to run again)."""

from examples.shop.common import db


def main() -> None:
    conn = db()
    conn.run("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text NOT NULL, "
             "status text NOT NULL DEFAULT 'pending', done_at timestamptz)")
    conn.close()
    print("schema ready", flush=True)


if __name__ == "__main__":
    main()
