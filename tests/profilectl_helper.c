/*
 * profilectl_helper — what test_profilectl.sh needs besides profilectl itself:
 *
 *   profilectl_helper put URL STORE KEY FILE   store FILE's bytes raw (e.g. a corrupt
 *                                              document from tests/data/corrupt/)
 *   profilectl_helper get URL STORE KEY        print the stored bytes (exit 3: absent)
 *   profilectl_helper load URL STORE KEY       load through the library (ForceLoad),
 *                                              release, shut down; a corrupt document
 *                                              is repaired and quarantined on the way
 *   profilectl_helper hold URL STORE KEY       load, then die without releasing: the
 *                                              profile stays locked by a fresh session
 */
#include <profileservice.h>
#include <profileservice/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what)
{
    fprintf(stderr, "profilectl_helper: %s: %s\n", what, ps_error_last()->message);
    return 1;
}

static int put_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    const ps_bytes *doc = userdata;
    (void)current;
    return ps_bytes_set(&out->doc, doc->data, doc->len);
}

static int read_file(ps_bytes *out, const char *path)
{
    FILE *f = fopen(path, "rb");
    char buf[65536];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (!f || ferror(f) || !feof(f)) {
        fprintf(stderr, "profilectl_helper: cannot read %s\n", path);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    return ps_bytes_set(out, buf, n) != PS_OK;
}

static int raw(const char *cmd, const char *url, const char *store, const char *key,
               const char *file)
{
    ps_backend *b = NULL;
    ps_bytes bytes = {NULL, 0};
    int rc = 0;
    if (ps_backend_open(&b, url) != PS_OK)
        return fail("open");
    if (strcmp(cmd, "put") == 0) {
        rc = read_file(&bytes, file);
        if (rc == 0 && b->update(b, store, key, put_transform, &bytes) != PS_OK)
            rc = fail("put");
    } else {
        int st = b->get(&bytes, b, store, key);
        if (st == PS_OK)
            fwrite(bytes.data, 1, bytes.len, stdout);
        rc = st == PS_OK ? 0 : st == PS_ENOTFOUND ? 3 : fail("get");
    }
    ps_bytes_dispose(&bytes);
    ps_backend_free(b);
    return rc;
}

static void count_corruption(const char *store, const char *key, void *userdata)
{
    (void)store;
    (void)key;
    ++*(int *)userdata;
}

static int load(int hold, const char *url, const char *store_name, const char *key)
{
    ps_config config;
    ps_service *service = NULL;
    ps_profile_store *store = NULL;
    ps_profile *profile = NULL;
    int corruptions = 0;
    ps_config_init(&config);
    config.store_url = url;
    config.place_id = 4242;
    config.job_id = hold ? "helper-hold" : "helper-load";
    if (ps_service_new(&service, &config) != PS_OK)
        return fail("service");
    ps_service_corruption_signal_connect(NULL, service, count_corruption, &corruptions,
                                         NULL);
    json_t *template_ = json_pack("{s:i, s:[s]}", "Coins", 0, "Items", "sword");
    int rc = ps_service_get_profile_store(&store, service, store_name, template_);
    json_decref(template_);
    if (rc != PS_OK || ps_store_load_profile(&profile, store, key, NULL, NULL) != PS_OK)
        return fail("load");
    printf("loaded %s, corruptions=%d\n", key, corruptions);
    fflush(stdout);
    if (hold)
        _exit(0); /* a crashed server: the session lock stays */
    ps_profile_release(profile);
    ps_profile_free(profile);
    ps_service_free(service); /* waits for the release save */
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && (strcmp(argv[1], "put") == 0 ? argc == 6 : argc == 5)) {
        if (strcmp(argv[1], "put") == 0 || strcmp(argv[1], "get") == 0)
            return raw(argv[1], argv[2], argv[3], argv[4], argv[5]);
        if (strcmp(argv[1], "load") == 0 || strcmp(argv[1], "hold") == 0)
            return load(strcmp(argv[1], "hold") == 0, argv[2], argv[3], argv[4]);
    }
    fprintf(stderr, "usage: profilectl_helper put|get|load|hold URL STORE KEY [FILE]\n");
    return 2;
}
