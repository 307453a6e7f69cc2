/*
 * uploads.h - the temporary files of uploads: created locked under a name
 * no upload can have, removed while still ours, and the leftovers of
 * servers that died cleaned away at start-up.  Files only, no sockets:
 * handler.c's put_file writes the body and does the rename.
 */
#ifndef GRACEFUL_UPLOADS_H
#define GRACEFUL_UPLOADS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/*
 * Create and lock a new temporary file (".upload-PID-FD", "-N" added on a
 * name clash) in the directory dir; its name goes to tmp[0..cap) and its
 * identity to *held.  Returns the descriptor, open for writing, or -1 with
 * errno set.  The lock lasts until the descriptor is closed: rename or
 * remove the file before closing it.
 */
int upload_temp_create(int dir, int conn_fd, char *tmp, size_t cap, struct stat *held);

/* Unlink the temporary file tmp in dir, if the name still leads to *held
 * (the file created and locked by upload_temp_create). */
void upload_temp_remove(int dir, const char *tmp, const struct stat *held);

/* Do two stat results describe the same file? */
bool upload_same_file(const struct stat *a, const struct stat *b);

/*
 * Remove temporary upload files left in the data directory by servers that
 * no longer run (killed with SIGKILL, or a crash: every orderly path
 * removes its own).  A file is a leftover when nobody holds its lock.
 * Returns how many it removed, or -1 with errno when the directory cannot
 * be read (the ones found before the error are removed all the same).
 */
int uploads_remove_stale(int data_dir_fd);

#endif /* GRACEFUL_UPLOADS_H */
