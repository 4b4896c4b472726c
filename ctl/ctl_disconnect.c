/* ctl_disconnect — see ctl_disconnect.h. */
#include "ctl/ctl_disconnect.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "common/records.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_replay.h"
#include "ctl/ctl_send.h"

void ctl_disconnect_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl disconnect ID... [--json]\n"
                 "\n"
                 "Publishes a disconnect.v1 record per connection (as DELETE\n"
                 "/v1/connections/{id} does); the worker revokes the grant at the provider\n"
                 "and the status becomes disconnected. Idempotent.\n"
                 "Exit codes: 0 sent, 1 Kafka did not acknowledge, 2 usage.\n");
}

int ctl_disconnect_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (ctl_args_parse(argc, argv, CTL_OPT_JSON, 0, &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (o.npos < 1)
        return err_set(e, ERRC_PERMANENT, "usage: oauthqctl disconnect ID... [--json]");
    for (int i = 0; i < o.npos; i++)
        if (!ctl_replay_id_ok(o.pos[i]))
            return err_set(e, ERRC_PERMANENT, "disconnect: bad connection id '%.63s'", o.pos[i]);
    char topic[256];
    if (config_topic(cx.cfg, KAFKA_TOPIC_CALLBACKS, topic, sizeof topic, e) < 0)
        return -1;
    cJSON *arr = cJSON_CreateArray();
    int rc = 0;
    for (int i = 0; i < o.npos && rc == 0; i++) {
        records_replay d;
        memset(&d, 0, sizeof d);
        snprintf(d.connection_id, sizeof d.connection_id, "%s", o.pos[i]);
        d.requested_at_ms = clock_wall_ms();
        const char *u = getenv("USER");
        snprintf(d.requested_by, sizeof d.requested_by, "%.40s", u && *u ? u : "oauthqctl");
        char *json = records_disconnect_encode(&d, e);
        if (!json || ctl_send(cx.cfg, topic, o.pos[i], json, 0, e) < 0)
            rc = -1;
        free(json);
        if (rc == 0) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(o.pos[i]));
            if (!cx.json)
                fprintf(cx.out, "%s: disconnect requested\n", o.pos[i]);
        }
    }
    if (cx.json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddItemToObject(doc, "disconnect_requested", arr);
        ctl_out_json(cx.out, doc, NULL);
        cJSON_Delete(doc);
    } else {
        cJSON_Delete(arr);
    }
    return rc;
}
