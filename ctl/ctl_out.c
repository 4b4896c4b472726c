/* ctl_out — see ctl_out.h. */
#include "ctl/ctl_out.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/records.h"

int ctl_out_json(FILE *out, const cJSON *doc, err_t *e)
{
    char *s = cJSON_Print(doc);
    if (!s)
        return err_set(e, ERRC_FATAL, "rendering JSON: out of memory");
    fprintf(out, "%s\n", s);
    free(s);
    return 0;
}

void ctl_out_add_time(cJSON *obj, const char *key, int64_t ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(obj, key);
        return;
    }
    char ts[RECORDS_TIME_MAX];
    records_time_format(ms, ts);
    cJSON_AddStringToObject(obj, key, ts);
}

const char *ctl_out_cell(const cJSON *obj, const char *key, char *buf, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(v))
        snprintf(buf, cap, "%s", v->valuestring);
    else if (cJSON_IsNumber(v))
        snprintf(buf, cap, "%.0f", v->valuedouble);
    else if (cJSON_IsBool(v))
        snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else
        snprintf(buf, cap, "-");
    return buf;
}
