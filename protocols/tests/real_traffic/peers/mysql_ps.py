#!/usr/bin/env python3
"""Binary-protocol prepared statements (COM_STMT_PREPARE / EXECUTE / CLOSE)
through mysql-connector-python (pure Python implementation).
Usage: mysql_ps.py PORT. Prints one JSON line per statement executed."""
import json
import sys

import mysql.connector

port = int(sys.argv[1])
c = mysql.connector.connect(
    host="127.0.0.1", port=port, user="root", password="", database="fathom", ssl_disabled=True, use_pure=True
)
cur = c.cursor(prepared=True)
done = []
for sql, args in [
    ("INSERT INTO items (id, name, price) VALUES (?, ?, ?)", (10, "prepared", 1.5)),
    ("SELECT id, name, price FROM items WHERE id >= ?", (1,)),
    ("UPDATE items SET price = ? WHERE id = ?", (2.25, 10)),
    ("SELECT name FROM no_such_table WHERE id = ?", (1,)),
]:
    try:
        cur.execute(sql, args)
        if cur.with_rows:
            cur.fetchall()
        done.append({"sql": sql, "errno": 0})
    except mysql.connector.Error as e:
        done.append({"sql": sql, "errno": e.errno})
cur.close()
c.close()
for d in done:
    print(json.dumps(d))
