/* connmeta — see connmeta.h. */
#include "common/connmeta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int connmeta_is_member(const char *name)
{
    return strcmp(name, "end_user") == 0 || strcmp(name, "organization") == 0 ||
           strcmp(name, "tags") == 0;
}

/* A string of 1..max bytes (0..max when !nonempty) without control bytes. */
static int text_ok(const char *s, size_t max, int nonempty)
{
    size_t n = strlen(s);
    if (n > max || (nonempty && n == 0))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static int tag_key_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONNMETA_TAG_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* An {"id", <optional string members>} object into a fresh canonical one.
 * names[0] is "id"; the others are optional strings or null. */
static cJSON *party(const cJSON *in, const char *what, const char *const *names,
                    const size_t *maxes, int n, err_t *e)
{
    if (!cJSON_IsObject(in)) {
        err_set(e, ERRC_PERMANENT, "%s must be an object with an \"id\"", what);
        return NULL;
    }
    for (const cJSON *it = in->child; it; it = it->next) {
        int known = 0;
        for (int i = 0; i < n; i++)
            known |= strcmp(it->string, names[i]) == 0;
        if (!known) {
            err_set(e, ERRC_PERMANENT, "%s: unknown member \"%.32s\"", what, it->string);
            return NULL;
        }
    }
    cJSON *out = cJSON_CreateObject();
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, names[i]);
        if (i > 0 && (!v || cJSON_IsNull(v))) {
            cJSON_AddNullToObject(out, names[i]);
            continue;
        }
        int ok = cJSON_IsString(v) && text_ok(v->valuestring, maxes[i], 1);
        if (ok && strcmp(names[i], "email") == 0)
            ok = strchr(v->valuestring, '@') != NULL;
        if (!ok) {
            err_set(e, ERRC_PERMANENT, "%s.%s must be a string of 1 to %zu characters%s", what,
                    names[i], maxes[i], strcmp(names[i], "email") == 0 ? " with an @" : "");
            cJSON_Delete(out);
            return NULL;
        }
        cJSON_AddStringToObject(out, names[i], v->valuestring);
    }
    return out;
}

static const char *const END_USER[] = {"id", "email", "display_name"};
static const size_t END_USER_MAX[] = {CONNMETA_ID_MAX, CONNMETA_EMAIL_MAX, CONNMETA_NAME_MAX};
static const char *const ORG[] = {"id", "display_name"};
static const size_t ORG_MAX[] = {CONNMETA_ID_MAX, CONNMETA_NAME_MAX};

int connmeta_from(const cJSON *obj, int require_end_user, connmeta *m, err_t *e)
{
    m->json[0] = '\0';
    const cJSON *eu = cJSON_GetObjectItemCaseSensitive(obj, "end_user");
    const cJSON *org = cJSON_GetObjectItemCaseSensitive(obj, "organization");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(obj, "tags");
    if (!eu && !org && !tags) {
        if (require_end_user)
            return err_set(e, ERRC_PERMANENT, "end_user is required: {\"id\": YOUR_USER_ID}");
        return 0;
    }
    if (!eu)
        return err_set(e, ERRC_PERMANENT, "end_user is required with organization or tags");
    cJSON *out = cJSON_CreateObject();
    int rc = -1;
    cJSON *p = party(eu, "end_user", END_USER, END_USER_MAX, 3, e);
    if (!p)
        goto done;
    cJSON_AddItemToObject(out, "end_user", p);
    if (!org || cJSON_IsNull(org)) {
        cJSON_AddNullToObject(out, "organization");
    } else {
        p = party(org, "organization", ORG, ORG_MAX, 2, e);
        if (!p)
            goto done;
        cJSON_AddItemToObject(out, "organization", p);
    }
    cJSON *t = cJSON_AddObjectToObject(out, "tags");
    if (tags && !cJSON_IsNull(tags)) {
        if (!cJSON_IsObject(tags)) {
            err_set(e, ERRC_PERMANENT, "tags must be an object of strings");
            goto done;
        }
        int n = 0;
        for (const cJSON *it = tags->child; it; it = it->next) {
            if (++n > CONNMETA_TAGS_MAX) {
                err_set(e, ERRC_PERMANENT, "at most %d tags", CONNMETA_TAGS_MAX);
                goto done;
            }
            if (!tag_key_ok(it->string)) {
                err_set(e, ERRC_PERMANENT, "tag names must be [A-Za-z0-9_.:-]{1,%d}",
                        CONNMETA_TAG_KEY_MAX);
                goto done;
            }
            if (cJSON_GetObjectItemCaseSensitive(t, it->string)) {
                err_set(e, ERRC_PERMANENT, "tag \"%.64s\" given twice", it->string);
                goto done;
            }
            if (!cJSON_IsString(it) || !text_ok(it->valuestring, CONNMETA_TAG_VALUE_MAX, 0)) {
                err_set(e, ERRC_PERMANENT,
                        "tag \"%.64s\" must be a string of at most %d characters", it->string,
                        CONNMETA_TAG_VALUE_MAX);
                goto done;
            }
            cJSON_AddStringToObject(t, it->string, it->valuestring);
        }
    }
    char *text = cJSON_PrintUnformatted(out);
    if (!text) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto done;
    }
    if (strlen(text) > CONNMETA_JSON_MAX) {
        err_set(e, ERRC_PERMANENT,
                "end_user, organization and tags together are too large (at most %d bytes)",
                CONNMETA_JSON_MAX);
    } else {
        snprintf(m->json, sizeof m->json, "%s", text);
        rc = 0;
    }
    free(text);
done:
    cJSON_Delete(out);
    return rc;
}

int connmeta_parse(const char *json, size_t len, connmeta *m, err_t *e)
{
    m->json[0] = '\0';
    if (len == 0)
        return 0;
    cJSON *o = cJSON_ParseWithLength(json, len);
    int rc = cJSON_IsObject(o) ? connmeta_from(o, 1, m, e)
                               : err_set(e, ERRC_PERMANENT, "metadata is not a JSON object");
    cJSON_Delete(o);
    return rc;
}

static void add(cJSON *obj, const connmeta *m, int view)
{
    cJSON *o = m->json[0] ? cJSON_Parse(m->json) : NULL;
    const char *names[] = {"end_user", "organization", "tags"};
    for (int i = 0; i < 3; i++) {
        cJSON *v = o ? cJSON_DetachItemFromObjectCaseSensitive(o, names[i]) : NULL;
        if (v)
            cJSON_AddItemToObject(obj, names[i], v);
        else if (view && i < 2)
            cJSON_AddNullToObject(obj, names[i]);
        else if (view)
            cJSON_AddObjectToObject(obj, names[i]);
    }
    cJSON_Delete(o);
}

void connmeta_add(cJSON *obj, const connmeta *m)
{
    if (m->json[0])
        add(obj, m, 0);
}

void connmeta_add_view(cJSON *obj, const connmeta *m)
{
    add(obj, m, 1);
}

void connmeta_ids(const connmeta *m, char end_user[CONNMETA_ID_MAX + 1],
                  char org[CONNMETA_ID_MAX + 1])
{
    end_user[0] = org[0] = '\0';
    cJSON *o = m->json[0] ? cJSON_Parse(m->json) : NULL;
    const cJSON *eu =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "end_user"), "id");
    const cJSON *oi =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "organization"), "id");
    if (cJSON_IsString(eu))
        snprintf(end_user, CONNMETA_ID_MAX + 1, "%s", eu->valuestring);
    if (cJSON_IsString(oi))
        snprintf(org, CONNMETA_ID_MAX + 1, "%s", oi->valuestring);
    cJSON_Delete(o);
}
