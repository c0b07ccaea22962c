#!/bin/bash
# Stands in for Apache Kafka's bin/connect-distributed.sh (and the part of bin/kafka-run-class.sh
# it runs) in localhost/kafka:4.3.1, the image connect-gate's test stack builds
# (tests/stack/images) in place of apache/kafka:4.3.1. Kafka's bin scripts ship in its binary
# distribution, not in the Maven artifacts the stack is built from, so this is the project's own
# script, installed as /opt/kafka/bin/connect-distributed.sh like upstream's, and behaving like
# it for a foreground worker:
#
#   connect-distributed.sh [-daemon] connect-distributed.properties
#
#   KAFKA_HEAP_OPTS              default -Xms256M -Xmx2G
#   KAFKA_JVM_PERFORMANCE_OPTS   default -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
#                                -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
#                                -XX:MaxInlineLevel=15 -Djava.awt.headless=true
#   KAFKA_LOG4J_OPTS             default -Dlog4j2.configurationFile=<base>/config/connect-log4j2.yaml;
#                                -Dkafka.logs.dir=$LOG_DIR is put in front either way
#   KAFKA_JMX_OPTS, JMX_PORT     default local JMX only (no port), as upstream
#   KAFKA_GC_LOG_OPTS            set from -loggc in EXTRA_ARGS (GC log in $LOG_DIR), as upstream
#   KAFKA_OPTS                   more JVM options (after the class path, as upstream)
#   KAFKA_DEBUG, JAVA_DEBUG_PORT, JAVA_DEBUG_OPTS, DEBUG_SUSPEND_FLAG   JDWP agent, as upstream
#   LOG_DIR                      default /tmp/kafka-logs, created if missing
#   EXTRA_ARGS                   default "-name connectDistributed": -name N, -loggc, -daemon, as
#                                upstream; any other words go to java before the class name
#   JAVA_HOME                    java from $JAVA_HOME/bin, else from PATH
#   CLASSPATH                    put before <base>/libs/*
#
# Differences from upstream: LOG_DIR defaults to /tmp/kafka-logs, not <base>/logs, so that the
# worker runs on a read-only root filesystem with /tmp writable; the class path is
# <base>/libs/* (upstream lists the same jars one by one); the shipped log4j2 configuration logs
# to stdout only (upstream's also writes $LOG_DIR/connect.log).

if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] connect-distributed.properties"
  exit 1
fi

base_dir="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "$KAFKA_LOG4J_OPTS" ]; then
  KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$base_dir/config/connect-log4j2.yaml"
fi
if [ -z "$KAFKA_HEAP_OPTS" ]; then
  KAFKA_HEAP_OPTS="-Xms256M -Xmx2G"
fi
if [ -z "$KAFKA_JVM_PERFORMANCE_OPTS" ]; then
  KAFKA_JVM_PERFORMANCE_OPTS="-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true"
fi
if [ -z "$KAFKA_JMX_OPTS" ]; then
  KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
fi
if [ -n "$JMX_PORT" ]; then
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
fi
if [ -n "$KAFKA_DEBUG" ]; then
  JAVA_DEBUG_PORT="${JAVA_DEBUG_PORT:-5005}"
  JAVA_DEBUG_OPTS="${JAVA_DEBUG_OPTS:--agentlib:jdwp=transport=dt_socket,server=y,suspend=${DEBUG_SUSPEND_FLAG:-n},address=$JAVA_DEBUG_PORT}"
  echo "Enabling Java debug options: $JAVA_DEBUG_OPTS"
  KAFKA_OPTS="$JAVA_DEBUG_OPTS $KAFKA_OPTS"
fi

LOG_DIR="${LOG_DIR:-/tmp/kafka-logs}"
[ -d "$LOG_DIR" ] || mkdir -p "$LOG_DIR"
KAFKA_LOG4J_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"

if [ -n "$JAVA_HOME" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

EXTRA_ARGS="${EXTRA_ARGS-"-name connectDistributed"}"
if [ "$1" = -daemon ]; then
  EXTRA_ARGS="-daemon $EXTRA_ARGS"
  shift
fi
# kafka-run-class.sh's options from EXTRA_ARGS (word-split, as upstream); the words after the
# first other one go to java before the class name, as upstream.
daemon_name="" daemon_mode=false gc_log=false java_pre=()
# shellcheck disable=SC2086
set -- $EXTRA_ARGS -- "$@"
while [ "$1" != -- ]; do
  case "$1" in
    -name) daemon_name="$2"; shift 2 ;;
    -loggc) [ -z "$KAFKA_GC_LOG_OPTS" ] && gc_log=true; shift ;;
    -daemon) daemon_mode=true; shift ;;
    *) break ;;
  esac
done
while [ "$1" != -- ]; do java_pre+=("$1"); shift; done
shift
if $gc_log; then
  KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/$daemon_name-gc.log:time,tags:filecount=10,filesize=100M"
fi

CLASSPATH="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"

# Word splitting of the *_OPTS variables is intended (several options each), as upstream.
# shellcheck disable=SC2086
if $daemon_mode; then
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS $KAFKA_LOG4J_OPTS \
    -cp "$CLASSPATH" $KAFKA_OPTS "${java_pre[@]}" org.apache.kafka.connect.cli.ConnectDistributed "$@" \
    > "$LOG_DIR/$daemon_name.out" 2>&1 < /dev/null &
else
  exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS $KAFKA_LOG4J_OPTS \
    -cp "$CLASSPATH" $KAFKA_OPTS "${java_pre[@]}" org.apache.kafka.connect.cli.ConnectDistributed "$@"
fi
