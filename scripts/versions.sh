# Sourced by scripts/setup and scripts/kafka: pinned versions and cache paths.
OAUTHQ_KAFKA_VERSION=3.9.1
OAUTHQ_CACHE_DIR=${OAUTHQ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/oauthq}
OAUTHQ_KAFKA_LIBS=$OAUTHQ_CACHE_DIR/kafka-$OAUTHQ_KAFKA_VERSION/libs
