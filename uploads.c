/*
 * uploads.c - the temporary files of uploads (see uploads.h).
 */
#define _DEFAULT_SOURCE /* flock, fstatat, O_NOFOLLOW, DT_REG */

#include "uploads.h"

#include "http/text.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/*
 * A temporary upload file is flock()ed from its creation until it has been
 * renamed or unlinked, and the kernel drops the lock when the last
 * descriptor of it closes, however the process ends.  That is how
 * uploads_remove_stale tells a leftover of a killed server from the live
 * upload of a server sharing the directory.  The pid in the name cannot
 * tell: pids are reused, and in containers every server is pid 1 of its
 * own namespace, so two servers sharing a volume can even pick the same
 * name.  Hence O_EXCL, and on EEXIST another name: an existing file is
 * never ours to delete.  flock, not fcntl(F_SETLK): an fcntl lock belongs
 * to the process, so any close() of the file anywhere in it would drop it,
 * and it never conflicts with another lock of the same process.
 *
 * Every step that changes a temporary name (the writer's rename or unlink,
 * the cleaner's unlink) is taken holding the file's lock, after checking
 * that the name still leads to the locked file: a name may have been
 * unlinked and taken again by a new upload in between.
 */
#define UPLOAD_NAME_TRIES 8

bool upload_same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

int upload_temp_create(int dir, int conn_fd, char *tmp, size_t cap, struct stat *held)
{
    for (unsigned try = 0; try < UPLOAD_NAME_TRIES; try++) {
        /* Names starting with '.' are never valid upload names, so
         * temporary files cannot collide with real ones. */
        struct http_text t = { .p = tmp, .end = tmp + cap };
        http_text_str(&t, ".upload-");
        http_text_uint(&t, (unsigned long long)getpid(), 1);
        http_text_str(&t, "-");
        http_text_uint(&t, (unsigned)conn_fd, 1);
        if (try > 0) {
            http_text_str(&t, "-");
            http_text_uint(&t, try, 1);
        }
        if (!http_text_end(&t)) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            return -1;
        }
        /* Between the create and the lock, a server starting up may find
         * the file unlocked, take it for a leftover and unlink it (it holds
         * the lock while it does: EWOULDBLOCK); so once locked, check that
         * the name still leads to this file.  Where locking fails for
         * another reason (ENOLCK: NFS without its lock service), go on
         * unlocked: the cleaner cannot lock the file either, and keeps it. */
        struct stat named;
        if ((flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) &&
            fstat(fd, held) == 0 &&
            fstatat(dir, tmp, &named, AT_SYMLINK_NOFOLLOW) == 0 && upload_same_file(held, &named))
            return fd;
        /* Being removed, or already gone, by a server starting up; if a
         * stat failed instead, the file stays for the next start-up to
         * remove.  Try the next name either way. */
        (void)close(fd);
    }
    errno = EEXIST;     /* every name taken: 500 */
    return -1;
}

/* Only if its name is still ours: see above. */
void upload_temp_remove(int dir, const char *tmp, const struct stat *held)
{
    struct stat named;
    /* Nothing to do if even the unlink fails: start-up removes the file,
     * and the old NAME is untouched either way. */
    if (fstatat(dir, tmp, &named, AT_SYMLINK_NOFOLLOW) == 0 && upload_same_file(held, &named))
        (void)unlinkat(dir, tmp, 0);
}

/*
 * Remove name from dir if it is a temporary upload nobody is writing: one
 * we can lock (see upload_temp_create).  A file system that cannot lock
 * keeps its leftovers: better one left over than a live upload deleted.
 */
static bool remove_if_abandoned(int dir, const char *name)
{
    /* Read-write: NFS emulates flock with a byte-range lock, and an
     * exclusive one needs a file open for writing.  O_NONBLOCK: a FIFO
     * given a temporary name must not hang start-up. */
    const int flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    int fd = openat(dir, name, O_RDWR | flags);
    if (fd < 0 && errno == EACCES)
        fd = openat(dir, name, O_RDONLY | flags);
    if (fd < 0)
        return false;
    struct stat held, named;
    bool removed = false;
    /* Once we hold the lock, the name must still lead to the file we
     * locked: its writer may have finished meanwhile, renamed it away and
     * closed it, and the name may even be a new upload's by now. */
    if (fstat(fd, &held) == 0 && S_ISREG(held.st_mode) &&
        flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dir, name, &named, AT_SYMLINK_NOFOLLOW) == 0 && upload_same_file(&held, &named))
        removed = unlinkat(dir, name, 0) == 0;
    (void)close(fd);        /* nothing written: nothing to lose; drops the lock */
    return removed;
}

int uploads_remove_stale(int data_dir_fd)
{
    static const char prefix[] = ".upload-";
    int removed = 0;

    /* fdopendir takes ownership of the descriptor it is given: hand it a
     * duplicate so the caller's stays open. */
    int fd = fcntl(data_dir_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        int saved = errno;
        (void)close(fd);
        errno = saved;
        return -1;
    }
    struct dirent *e;
    /* readdir returns NULL at the end and on an error: only an error sets
     * errno. */
    while ((errno = 0, e = readdir(dir)) != NULL)
        /* Regular files only, since opening a device has side effects
         * (DT_UNKNOWN, where the file system does not say, is checked
         * after opening). */
        if ((e->d_type == DT_REG || e->d_type == DT_UNKNOWN) &&
            strncmp(e->d_name, prefix, sizeof prefix - 1) == 0 &&
            remove_if_abandoned(data_dir_fd, e->d_name))
            removed++;
    int saved = errno;
    (void)closedir(dir);    /* read-only: nothing to lose */
    errno = saved;
    return saved != 0 ? -1 : removed;
}
