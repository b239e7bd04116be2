"""stored files in chunks of at most 1 MiB

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:00:00.000000

The original file of a submission was one ``LargeBinary`` value in ``submission_files``, which needs the
whole file in memory to write and to read. Files now live in ``stored_files`` (one row a file: size,
chunk count, SHA-256) and ``stored_file_chunks`` (its bytes, at most 1 MiB a row, in order); a
submission points at its file with ``submissions.file_id``, and ``file_deleted_at`` records when the
retention job deleted it (DESIGN §6, "Stored files" and "Files").

Every existing ``submission_files`` row is copied into chunks (the stored file takes the submission's
id) and the old table is dropped. On SQLite the copy reads each value through SQLite's incremental
blob I/O, 1 MiB at a time; on PostgreSQL it reads one file at a time (a one-off: at most one old file,
200 MB, in memory). An undo's empty file is not copied: an undo has no file.
"""

import hashlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

import payoutdesk.models.types

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1024 * 1024


def upgrade() -> None:
    op.create_table('stored_files',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('chunks', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stored_files'))
    )
    op.create_table('stored_file_chunks',
    sa.Column('file_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['stored_files.id'], name=op.f('fk_stored_file_chunks_file_id_stored_files')),
    sa.PrimaryKeyConstraint('file_id', 'seq', name=op.f('pk_stored_file_chunks'))
    )
    if op.get_bind().dialect.name == 'sqlite':
        # not a batch operation: rebuilding submissions would drop it, and its files' rows refer to it. SQLite
        # adds a column with a REFERENCES clause in place when the column's default is NULL.
        op.execute('ALTER TABLE submissions ADD COLUMN file_id BIGINT '
                   'CONSTRAINT fk_submissions_file_id_stored_files REFERENCES stored_files (id)')
    else:
        op.add_column('submissions', sa.Column('file_id', sa.BigInteger(), nullable=True))
        op.create_foreign_key(op.f('fk_submissions_file_id_stored_files'), 'submissions', 'stored_files',
                              ['file_id'], ['id'])
    op.add_column('submissions', sa.Column('file_deleted_at', payoutdesk.models.types.UTCDateTime(timezone=True), nullable=True))
    op.create_index('ix_submissions_file', 'submissions', ['file_id'], unique=False)

    _copy_old_files()
    op.drop_table('submission_files')


def _copy_old_files() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    old = list(bind.execute(sa.text(
        "SELECT f.submission_id, length(f.data), s.created_at" + (", f.rowid" if sqlite else "")
        + " FROM submission_files f JOIN submissions s ON s.id = f.submission_id "
        "WHERE length(f.data) > 0 ORDER BY f.submission_id")))
    for row in old:
        sid, size, created_at = int(row[0]), int(row[1]), row[2]
        digest = hashlib.sha256()
        seq = 0
        for part in (_sqlite_parts(bind, int(row[3]), size) if sqlite else _pg_parts(bind, sid)):
            digest.update(part)
            if seq == 0:
                bind.execute(sa.text("INSERT INTO stored_files (id, size, chunks, sha256, created_at) "
                                     "VALUES (:id, 0, 0, NULL, :at)"), {"id": sid, "at": created_at})
            bind.execute(sa.text("INSERT INTO stored_file_chunks (file_id, seq, data) VALUES (:f, :n, :d)"),
                         {"f": sid, "n": seq, "d": part})
            seq += 1
        bind.execute(sa.text("UPDATE stored_files SET size = :size, chunks = :n, sha256 = :sha WHERE id = :id"),
                     {"size": size, "n": seq, "sha": digest.hexdigest(), "id": sid})
        bind.execute(sa.text("UPDATE submissions SET file_id = :id WHERE id = :id"), {"id": sid})
    if not sqlite and old:
        bind.execute(sa.text("SELECT setval(pg_get_serial_sequence('stored_files', 'id'), "
                             "(SELECT max(id) FROM stored_files))"))


def _sqlite_parts(bind: sa.Connection, rowid: int, size: int) -> Iterator[bytes]:
    raw = bind.connection.driver_connection
    with raw.blobopen("submission_files", "data", rowid, readonly=True) as blob:
        for start in range(0, size, CHUNK):
            blob.seek(start)
            yield blob.read(CHUNK)


def _pg_parts(bind: sa.Connection, sid: int) -> Iterator[bytes]:
    data = bytes(bind.execute(sa.text("SELECT data FROM submission_files WHERE submission_id = :id"),
                              {"id": sid}).scalar_one())
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


def downgrade() -> None:
    bind = op.get_bind()
    files_of = [(int(sid), file_id) for sid, file_id in bind.execute(sa.text("SELECT id, file_id FROM submissions ORDER BY id"))]
    # first the columns (on SQLite a rebuild of submissions, which no other table's rows refer to yet)
    op.drop_index('ix_submissions_file', table_name='submissions')
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        if bind.dialect.name != 'sqlite':  # SQLite's column constraint goes with its column (it is not reflected by name)
            batch_op.drop_constraint(batch_op.f('fk_submissions_file_id_stored_files'), type_='foreignkey')
        batch_op.drop_column('file_deleted_at')
        batch_op.drop_column('file_id')
    op.create_table('submission_files',
    sa.Column('submission_id', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], name=op.f('fk_submission_files_submission_id_submissions')),
    sa.PrimaryKeyConstraint('submission_id', name=op.f('pk_submission_files'))
    )
    # a file deleted by retention (or an undo, which has none) comes back empty
    for sid, file_id in files_of:
        parts = [] if file_id is None else [bytes(r[0]) for r in bind.execute(sa.text(
            "SELECT data FROM stored_file_chunks WHERE file_id = :f ORDER BY seq"), {"f": file_id})]
        bind.execute(sa.text("INSERT INTO submission_files (submission_id, data) VALUES (:s, :d)"),
                     {"s": sid, "d": b"".join(parts)})
    op.drop_table('stored_file_chunks')
    op.drop_table('stored_files')
