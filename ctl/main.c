/* oauthqctl entry point: everything lives in ctl/ so tests can call it. */
#include "ctl/ctl.h"

int main(int argc, char **argv)
{
    return ctl_main(argc, argv, stdout, stderr);
}
