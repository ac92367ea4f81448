# shellcheck shell=bash
# nginx as the peer of the registry benchmarks, and as the fleet test's load
# balancer. Source it, then
#   nginx_static DIR PORT      serve DIR's files on 127.0.0.1:PORT (2 workers,
#                              sendfile, no access log); sets NGINX_PID
# Its config, pid and temp files go under DIR/../nginx-run.
nginx_static() {
  local www=$1 port=$2 run
  run="$(dirname "$www")/nginx-run"
  mkdir -p "$run"
  cat > "$run/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $run/nginx.pid;
error_log $run/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  server { listen 127.0.0.1:$port; root $www; }
}
CONF
  nginx -c "$run/nginx.conf" -p "$run" &
  NGINX_PID=$!
  local _
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "nginx: not listening on $port" >&2; return 1
}

# nginx_balance RUN PORT HOST:PORT...   a load balancer on 127.0.0.1:PORT in
# front of hub replicas (round robin; its config, pid and logs go in RUN):
# bodies stream both ways (no request or response buffering, no size cap, so
# multi-GiB uploads and downloads pass through), the Host header is kept (the
# hub's public URL is the balancer's), X-Forwarded-For is set, and a request
# that could not reach a replica (connection refused or reset before it was
# sent) goes to the next one; nginx never re-sends a POST that a replica
# had already received. Sets NGINX_PID.
nginx_balance() {
  local run=$1 port=$2 servers="" s
  shift 2
  for s in "$@"; do servers+="    server $s max_fails=1 fail_timeout=10s;"$'\n'; done
  mkdir -p "$run"
  cat > "$run/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $run/nginx.pid;
error_log $run/error.log warn;
events { worker_connections 4096; }
http {
  access_log $run/access.log;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  upstream hub {
$servers    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    client_max_body_size 0;
    location / {
      proxy_pass http://hub;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
    }
  }
}
CONF
  nginx -c "$run/nginx.conf" -p "$run" &
  NGINX_PID=$!
  local _
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "nginx: not listening on $port" >&2; return 1
}
